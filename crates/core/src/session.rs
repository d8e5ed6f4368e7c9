//! One connection: ferry-proto's [`ServerConnection`] driven against the [`Store`].
//!
//! Every protocol decision is the state machine's; a session only turns its commands into store
//! operations and its events into log lines. An engine owns the socket and calls, in a loop:
//! [`Session::feed`] with what it read (only while [`Session::wants_input`]), writes
//! [`Session::pending_output`] and reports it with [`Session::consume_output`], sends any
//! [`Session::take_body`] file range (sendfile) and reports it with [`Session::body_sent`], runs
//! any [`Session::take_hash_job`] holding one of its hash permits and reports it with
//! [`Session::hash_done`], waits no longer than [`Session::poll_timeout`], and stops when
//! [`Session::is_closed`].
//!
//! Store calls block (disk I/O); the async engine runs sessions on its blocking pool. The one
//! call that can take long, hashing a large file for its first GET, is not made here: it is
//! handed out as a [`HashJob`], so that an engine can wait for a hash permit where waiting is
//! cheap and never park a pool thread on it (`[SEC-3]`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_proto::server::{Command, Event, ServerConfig, ServerConnection};
use ferry_proto::{Digest, Entry, ErrorCode, FrameHead, Name, Role};
use tracing::{debug, info, warn};

use crate::digests::HashJob;
use crate::history::{ConnStats, History};
use crate::settings::Settings;
use crate::store::{OpenedFile, Store, StoreError, Upload};

/// Transfers at least this large log their progress every 10%.
const PROGRESS_LOG_MIN: u64 = 64 << 20;

/// The smallest file a FETCH gets in the trailing form (§ 7.10) when its digest is unknown.
/// Hashing first costs one more read of the file before its first reply byte; below this size
/// that read is short, and the file's bytes go out in the leading form, by the engine's fast
/// paths for small replies (one `writev`, read on the reactor), which do not hash as they send.
pub const TRAILING_FORM_MIN: u64 = 1 << 20;

/// The bytes of a trailing-form body hashed per read, after the engine has sent them.
const TRAIL_HASH_CHUNK: usize = 256 * 1024;

/// What all connections of one server share.
pub struct Server {
    pub settings: Settings,
    pub protocol: Arc<ServerConfig>,
    pub store: Arc<Store>,
    pub history: History,
    shutting_down: AtomicBool,
    /// Called once when a shutdown starts: engines register how to wake their accept loops.
    on_shutdown: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("root", &self.settings.root).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store and builds the shared state.
    ///
    /// # Errors
    /// The root cannot be created or opened.
    pub fn new(mut settings: Settings) -> std::io::Result<Arc<Self>> {
        let mut store = Store::open(&settings.root, settings.store())?;
        // A name the file system cannot hold could only fail late, as INTERNAL after an
        // upload's data: announce no more than the root's file system allows (`[LIM-1]`).
        if let Some(fs_max) = store.fs_name_max() {
            if settings.max_name_len > fs_max {
                tracing::warn!(
                    configured = settings.max_name_len,
                    file_system = fs_max,
                    "--max-name-len is above what the root's file system allows; using its limit"
                );
                settings.max_name_len = fs_max;
                store.set_max_name_len(fs_max);
            }
        }
        let store = Arc::new(store);
        Ok(Arc::new(Self {
            protocol: settings.protocol(),
            history: History::new(settings.history),
            store,
            settings,
            shutting_down: AtomicBool::new(false),
            on_shutdown: Mutex::new(Vec::new()),
        }))
    }

    /// Starts the graceful shutdown (§ 13): runs the registered hooks, once.
    pub fn request_shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::SeqCst) {
            info!("shutdown requested: no new connections; draining");
            for hook in self.on_shutdown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
                hook();
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Registers a hook run when a shutdown starts (at once if one already has).
    pub fn on_shutdown(&self, hook: impl Fn() + Send + Sync + 'static) {
        if self.is_shutting_down() {
            hook();
        }
        self.on_shutdown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Box::new(hook));
    }
}

/// A range of a file the engine must send to the client now, then report with
/// [`Session::body_sent`].
#[derive(Debug)]
pub struct Body {
    pub file: std::fs::File,
    pub offset: u64,
    pub len: u64,
}

/// Progress of a large transfer, for the log.
#[derive(Debug)]
struct Progress {
    what: &'static str,
    name: String,
    total: u64,
    done: u64,
    next_decile: u64,
}

impl Progress {
    fn new(what: &'static str, name: &str, total: u64) -> Option<Self> {
        (total >= PROGRESS_LOG_MIN).then(|| Self { what, name: name.to_owned(), total, done: 0, next_decile: 1 })
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        while self.next_decile <= 9 && self.done * 10 >= self.total * self.next_decile {
            info!(name = %self.name, percent = self.next_decile * 10, bytes = self.done, "{} progress", self.what);
            self.next_decile += 1;
        }
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Session {
    server: Arc<Server>,
    conn: ServerConnection,
    stats: Arc<ConnStats>,
    /// Received bytes the machine has not used yet: at most one partial message head, or the
    /// pipelined input that waits while a reply is produced.
    inbuf: Vec<u8>,
    upload: Option<Upload>,
    upload_progress: Option<Progress>,
    body: Option<Body>,
    body_progress: Option<Progress>,
    /// A hash the engine must run before the GET in [`Self::hashing_for`] can be answered.
    hash_job: Option<HashJob>,
    /// The GET waiting for its file's digest: the machine stays in its serving state meanwhile,
    /// so no further input is processed until [`Self::hash_done`].
    hashing_for: Option<(Name, OpenedFile)>,
    /// A FETCH answered in the trailing form: the body's bytes are hashed as the engine reports
    /// them sent, and their digest follows them (`[TRL-2]`).
    trailing: Option<Trailing>,
    /// The trailing digest could not be computed: the connection must end without it
    /// (`[TRL-9]`).
    broken: bool,
    /// Whether store calls may block here; see [`Self::defer_store_calls`].
    may_block: bool,
    /// Work held back for [`Self::run_deferred`] while store calls may not block.
    deferred: Option<Deferred>,
    span: tracing::Span,
}

/// The hashing of a body sent in the trailing form (§ 6.5): its own handle on the file, so that
/// the engine may move the body's to another thread.
#[derive(Debug)]
struct Trailing {
    file: std::fs::File,
    key: crate::digests::FileKey,
    hasher: ferry_proto::digest::Hasher,
    /// Bytes of the file hashed so far, from offset 0.
    hashed: u64,
    size: u64,
}

impl Trailing {
    /// Hashes the next `n` bytes, which the engine has just sent. They are read back from the
    /// page cache they were sent from.
    fn hash_sent(&mut self, n: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut left = n.min(self.size - self.hashed);
        let mut buf = vec![0u8; TRAIL_HASH_CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX))];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let got = self.file.read_at(&mut buf[..want], self.hashed)?;
            if got == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file got shorter"));
            }
            self.hasher.update(&buf[..got]);
            self.hashed += got as u64;
            left -= got as u64;
        }
        Ok(())
    }
}

/// What a session that may not block holds back for [`Session::run_deferred`].
#[derive(Debug)]
enum Deferred {
    /// A request the caches could not answer.
    Command(Command),
    /// Buffered input of an upload, whose data must be written to its temporary file.
    Input,
}

impl Session {
    /// A connection from `peer`, accepted at `now`.
    pub fn new(server: Arc<Server>, peer: SocketAddr, now: Instant) -> Self {
        let stats = server.history.open(&peer.to_string());
        let span = tracing::info_span!("conn", id = stats.id, %peer);
        span.in_scope(|| info!("connection opened"));
        Self {
            conn: ServerConnection::new(server.protocol.clone(), now),
            server,
            stats,
            inbuf: Vec::new(),
            upload: None,
            upload_progress: None,
            body: None,
            body_progress: None,
            hash_job: None,
            hashing_for: None,
            trailing: None,
            broken: false,
            may_block: true,
            deferred: None,
            span,
        }
    }

    /// The connection's id in the history.
    pub fn id(&self) -> u64 {
        self.stats.id
    }

    /// The tracing span of this connection, for the engine's own log lines.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Feeds bytes read from the socket.
    pub fn feed(&mut self, data: &[u8], now: Instant) {
        self.stats.add_in(data.len() as u64);
        if self.inbuf.is_empty() {
            let used = self.process(data, now);
            self.inbuf.extend_from_slice(&data[used..]);
        } else {
            self.inbuf.extend_from_slice(data);
            self.process_buffered(now);
        }
    }

    fn process_buffered(&mut self, now: Instant) {
        let buf = std::mem::take(&mut self.inbuf);
        let used = self.process(&buf, now);
        self.inbuf = buf;
        self.inbuf.drain(..used);
    }

    /// Runs the machine over `input` until it needs more or waits; returns the bytes used.
    fn process(&mut self, input: &[u8], now: Instant) -> usize {
        if !self.may_block && self.upload.is_some() {
            // An upload's data goes to its temporary file: a disk write, for the pool.
            self.deferred = Some(Deferred::Input);
            return 0;
        }
        let span = self.span.clone();
        let _entered = span.enter();
        let mut used = 0;
        loop {
            let (n, event) = self.conn.handle_input(&input[used..], now);
            used += n;
            match event {
                Some(event) => self.on_event(event, now),
                None => break,
            }
        }
        if self.conn.is_closed() {
            self.upload = None;
        }
        used
    }

    fn on_event(&mut self, event: Event<'_>, now: Instant) {
        match event {
            Event::Connected { role } => info!(%role, legacy = self.conn.is_legacy(), "handshake done"),
            Event::Refused { kind, error } => info!(command = %kind, %error, "refused"),
            Event::Shutdown => {
                info!("SHUTDOWN by an admin");
                self.server.request_shutdown();
            }
            Event::PutData(data) => {
                if let Some(p) = &mut self.upload_progress {
                    p.advance(data.len() as u64);
                }
                if let Some(upload) = &mut self.upload {
                    if let Err(e) = upload.write(data) {
                        // Answered at once; the machine drops the rest of the data (`[PUT-5]`).
                        let name = upload.name().clone();
                        self.upload = None;
                        self.fail(e, "writing upload data (the rest is discarded)", Some(&name), now);
                    }
                }
            }
            Event::PutComplete { verified, md5 } => {
                self.upload_progress = None;
                let upload = self.upload.take();
                if !verified {
                    info!("PUT refused: CHECKSUM_MISMATCH; nothing stored");
                } else if let Some(upload) = upload {
                    let name = upload.name().clone();
                    match upload.commit(md5) {
                        Ok(replaced) => {
                            info!(replaced, "PUT stored");
                            self.conn.respond_put(replaced, now);
                        }
                        Err(e) => self.fail(e, "publishing an upload", Some(&name), now),
                    }
                }
            }
            Event::Command(command) if self.may_block => self.on_command(command, now),
            Event::Command(command) => {
                if let Some(command) = self.answer_from_caches(command, now) {
                    debug!(?command, "deferred to where the store may block");
                    self.deferred = Some(Deferred::Command(command));
                }
            }
        }
    }

    /// Carries out a request; the store calls may block.
    fn on_command(&mut self, command: Command, now: Instant) {
        let store = &self.server.store;
        match command {
            Command::List => match store.list() {
                Ok(entries) => self.answer_list(entries, now),
                Err(e) => self.fail(e.into(), "listing the root", None, now),
            },
            Command::Stat(name) => match store.stat(&name) {
                Ok(entry) => self.answer_stat(&entry, now),
                Err(e) => self.fail(e, "reading a file's status for STAT", Some(&name), now),
            },
            Command::Delete(name) => match store.delete(&name) {
                Ok(()) => {
                    info!(name = %name, "DELETE");
                    self.conn.respond_delete(now);
                }
                Err(e) => self.fail(e, "deleting a file", Some(&name), now),
            },
            Command::Status => {
                info!("STATUS");
                self.conn.respond_status(self.server.history.snapshot(), now);
            }
            Command::Get { name, trailing, .. } => match store.open_file(&name) {
                Ok(opened) => match store.cached_digest(&opened) {
                    Some(md5) => self.answer_get(name, opened, md5, now),
                    // `[TRL-7]`: no digest yet, and a FETCH lets it follow the data.
                    None if trailing && opened.size >= TRAILING_FORM_MIN => self.answer_trailing(name, opened, now),
                    None => self.wait_for_hash(name, opened, now),
                },
                Err(e) => self.fail(e, "opening a file for GET", Some(&name), now),
            },
            Command::Put(head) => match store.begin_upload(&head) {
                Ok(upload) => {
                    debug!(name = %head.name, size = head.size, trailing = head.is_trailing(), "PUT receiving");
                    self.upload_progress = Progress::new("PUT", head.name.as_str(), head.size);
                    self.upload = Some(upload);
                    self.conn.accept_put();
                }
                Err(e) => self.fail(e, "creating an upload's temporary file", Some(&head.name), now),
            },
        }
    }

    /// Carries out a request if the kernel's and the store's caches can answer it without
    /// blocking (a GET or STAT of a file whose digest is in memory, a LIST of an unchanged root,
    /// a STATUS); otherwise gives it back, for [`Self::run_deferred`].
    fn answer_from_caches(&mut self, command: Command, now: Instant) -> Option<Command> {
        let store = &self.server.store;
        match command {
            Command::Status => self.on_command(command, now),
            Command::List => match store.list_cached() {
                Some(entries) => self.answer_list(entries, now),
                None => return Some(command),
            },
            Command::Get { name, offset, trailing } => match store.open_cached(&name) {
                Some((opened, Some(md5))) => self.answer_get(name, opened, md5, now),
                _ => return Some(Command::Get { name, offset, trailing }),
            },
            Command::Stat(name) => match store.open_cached(&name) {
                Some((opened, md5 @ Some(_))) => {
                    let entry = Store::entry(name, &opened.key, md5);
                    self.answer_stat(&entry, now);
                }
                _ => return Some(Command::Stat(name)),
            },
            other => return Some(other),
        }
        None
    }

    fn answer_list(&mut self, entries: Arc<[Entry]>, now: Instant) {
        info!(entries = entries.len(), "LIST");
        self.conn.respond_list(entries, now);
    }

    fn answer_stat(&mut self, entry: &Entry, now: Instant) {
        info!(name = %entry.name, "STAT");
        self.conn.respond_stat(entry, now);
    }

    /// Answers the GET being served with the file and its digest, and hands its bytes to the
    /// engine as the body.
    fn answer_get(&mut self, name: Name, opened: OpenedFile, md5: Digest, now: Instant) {
        let frame = FrameHead { name: name.clone(), size: opened.size, md5 };
        match self.conn.respond_get(frame, now) {
            Some((offset, len)) => {
                info!(name = %name, offset, bytes = len, "GET");
                self.body_progress = Progress::new("GET", name.as_str(), len);
                if len > 0 {
                    self.body = Some(Body { file: opened.file, offset, len });
                }
            }
            None => info!(name = %name, size = opened.size, "GET refused: BAD_OFFSET"),
        }
    }

    /// Answers the FETCH being served in the trailing form (§ 7.10): the engine sends the file at
    /// once, and its digest, computed from the bytes as they are reported sent, follows them.
    fn answer_trailing(&mut self, name: Name, opened: OpenedFile, now: Instant) {
        let file = match opened.file.try_clone() {
            Ok(file) => file,
            Err(e) => return self.wait_for_hash_after(e, name, opened, now),
        };
        let Some(len) = self.conn.respond_get_trailing(name.clone(), opened.size, now) else { return };
        info!(name = %name, bytes = len, "GET (FETCH, digest after the data)");
        self.body_progress = Progress::new("GET", name.as_str(), len);
        self.trailing =
            Some(Trailing { file, key: opened.key, hasher: Default::default(), hashed: 0, size: opened.size });
        if len > 0 {
            self.body = Some(Body { file: opened.file, offset: 0, len });
        } else {
            self.finish_trailing(now);
        }
    }

    /// A second handle on the file could not be had: the leading form needs none.
    fn wait_for_hash_after(&mut self, e: std::io::Error, name: Name, opened: OpenedFile, now: Instant) {
        debug!(name = %name, error = %e, "no second handle for the trailing form; hashing first");
        self.wait_for_hash(name, opened, now);
    }

    /// Sends the trailing digest once every byte is hashed, and keeps it for later requests.
    fn finish_trailing(&mut self, now: Instant) {
        let Some(t) = self.trailing.take_if(|t| t.hashed == t.size) else { return };
        let md5 = t.hasher.finish();
        self.server.store.learn_digest(t.key, md5, Some(&t.file));
        self.conn.send_trailer(md5, now);
    }

    /// Parks the GET being served until the engine has hashed its file (`[SEC-3]`).
    fn wait_for_hash(&mut self, name: Name, opened: OpenedFile, now: Instant) {
        match self.server.store.hash_job(&opened) {
            Ok(job) => {
                debug!(name = %name, bytes = job.size(), "GET waits for its file to be hashed");
                self.hash_job = Some(job);
                self.hashing_for = Some((name, opened));
            }
            Err(e) => self.fail(e.into(), "starting to hash a file for GET", Some(&name), now),
        }
    }

    /// A hash the engine must run now, holding one of its hash permits (`[SEC-3]`), then report
    /// with [`Self::hash_done`]. While one is outstanding the session neither reads nor writes:
    /// [`Self::wants_input`] is false and there is no body.
    pub fn take_hash_job(&mut self) -> Option<HashJob> {
        self.hash_job.take()
    }

    /// Reports the outcome of the job from [`Self::take_hash_job`]: the waiting GET is answered,
    /// with its head and body, or with the error, and input pipelined behind it is processed.
    pub fn hash_done(&mut self, digest: std::io::Result<Digest>, now: Instant) {
        let Some((name, opened)) = self.hashing_for.take() else { return };
        let span = self.span.clone();
        let _entered = span.enter();
        match digest {
            Ok(md5) => self.answer_get(name, opened, md5, now),
            Err(e) => self.fail(e.into(), "hashing a file for GET", Some(&name), now),
        }
        if self.conn.wants_input() && !self.inbuf.is_empty() {
            self.process_buffered(now);
        }
    }

    /// Answers the current request with the store's error. A storage error or a full disk is the
    /// operator's to fix, so its warning says what was being done (`operation`) to which file
    /// (`path`: the root, joined with the file's name if there is one).
    fn fail(&mut self, e: StoreError, operation: &str, name: Option<&Name>, now: Instant) {
        match &e {
            StoreError::Io(_) | StoreError::Full => {
                let root = &self.server.settings.root;
                let path = name.map_or_else(|| root.clone(), |n| root.join(n.as_str()));
                let error = match &e {
                    StoreError::Io(io) => io.to_string(),
                    other => other.to_string(),
                };
                warn!(operation, path = %path.display(), %error, "storage error");
            }
            other => info!(error = %other, "refused"),
        }
        self.conn.respond_error(e.code(), e.to_string(), now);
    }

    /// Bytes to write to the socket.
    pub fn pending_output(&self) -> &[u8] {
        self.conn.pending_output()
    }

    /// Reports that `n` bytes of [`Self::pending_output`] were written at `now`. Once the replies
    /// waiting fall below the bound, requests pipelined behind them are processed (`[RES-2]`).
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        self.stats.add_out(n as u64);
        self.conn.consume_output(n, now);
        if self.conn.wants_input() && !self.inbuf.is_empty() {
            self.process_buffered(now);
        }
    }

    /// When the engine must drop a client that takes none of the bytes waiting for it
    /// (`[TIME-5]`); `None` while nothing waits.
    pub fn send_deadline(&self) -> Option<Instant> {
        self.conn.send_deadline()
    }

    /// A file range to send now, after the pending output.
    pub fn take_body(&mut self) -> Option<Body> {
        self.body.take()
    }

    /// Reports that `n` bytes of the body were sent; when the body is complete, input that was
    /// pipelined behind the GET is processed.
    pub fn body_sent(&mut self, n: u64, now: Instant) {
        self.stats.add_out(n);
        if let Some(p) = &mut self.body_progress {
            p.advance(n);
        }
        self.conn.body_sent(n, now);
        if let Some(t) = &mut self.trailing {
            if let Err(e) = t.hash_sent(n) {
                // `[TRL-9]`: no trailer can be sent; the client sees a truncated frame.
                warn!(error = %e, "reading back a file sent in the trailing form; closing");
                self.trailing = None;
                self.broken = true;
                return;
            }
            self.finish_trailing(now);
        }
        if self.conn.wants_input() && !self.inbuf.is_empty() {
            self.process_buffered(now);
        }
    }

    /// Whether the engine should read from the socket now.
    pub fn wants_input(&self) -> bool {
        self.deferred.is_none() && self.conn.wants_input()
    }

    /// Whether a request is being served (the drain waits for these).
    pub fn is_busy(&self) -> bool {
        self.conn.is_busy() || self.body.is_some() || self.deferred.is_some()
    }

    /// From now on, never call the store where it may block: answer what the caches can, and
    /// hand the rest out as deferred work ([`Self::has_deferred`], [`Self::run_deferred`]).
    ///
    /// This is for an engine that drives sessions on an event loop (the async engine's reactor),
    /// where a store call that waits for the disk would stall every other connection, and that
    /// runs blocking work elsewhere (its pool). An engine whose threads may block does not call
    /// this: every store call is then made where the request is read.
    pub fn defer_store_calls(&mut self) {
        self.may_block = false;
    }

    /// Whether work waits for [`Self::run_deferred`]; meanwhile the session reads no input.
    pub fn has_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// Runs the deferred work — a request the caches could not answer, or an upload's data for
    /// its temporary file — where the store may block, and the input pipelined behind it.
    pub fn run_deferred(&mut self, now: Instant) {
        let Some(work) = self.deferred.take() else { return };
        let span = self.span.clone();
        let _entered = span.enter();
        self.may_block = true;
        if let Deferred::Command(command) = work {
            self.on_command(command, now);
        }
        // Even with nothing buffered: an accepted PUT of an empty file completes here.
        if self.conn.wants_input() {
            self.process_buffered(now);
        }
        self.may_block = false;
    }

    /// The deadline the engine must wake up at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Applies deadlines that have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.conn.handle_timeout(now) {
            let _e = self.span.enter();
            info!("deadline passed: TIMEOUT");
            self.upload = None;
        }
    }

    /// The client closed its side.
    pub fn handle_eof(&mut self) {
        let clean = self.conn.handle_eof(&self.inbuf);
        let _e = self.span.enter();
        if self.upload.take().is_some() {
            info!("client left mid-upload: discarded");
        } else if !clean {
            info!("client left mid-message");
        }
    }

    /// Starts the drain for this connection (§ 13) at `now`.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.conn.begin_shutdown(now);
    }

    /// Whether the connection is over: flush the pending output, then close.
    pub fn is_closed(&self) -> bool {
        self.broken || self.conn.is_closed()
    }

    /// Whether it ended with a fatal error (the engine lingers before closing, `[ERR-9]`).
    pub fn close_reason(&self) -> Option<ErrorCode> {
        self.conn.close_reason()
    }

    /// The role granted, once known.
    pub fn role(&self) -> Option<Role> {
        self.conn.role()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stats.close();
        let _e = self.span.enter();
        info!(bytes_in = self.stats.bytes_in(), bytes_out = self.stats.bytes_out(), "connection closed");
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::{ClientHello, Decoded, Entry, ReplyDecoder, Request, ServerItem};

    use super::*;

    /// The replies in `out`, one word per reply item (data ends skipped), with the digests of
    /// GET heads and STAT entries.
    fn replies(out: &[u8]) -> Vec<(&'static str, Option<Digest>)> {
        let mut decoder = ReplyDecoder::new();
        let (mut at, mut seen) = (0, Vec::new());
        while at < out.len() {
            let Decoded::Item { item, consumed } = decoder.decode(&out[at..]).expect("a valid reply") else { break };
            at += consumed;
            seen.push(match item {
                ServerItem::Hello(_) => ("hello", None),
                ServerItem::GetHead { frame, .. } => ("get", Some(frame.md5)),
                ServerItem::Stat(Entry { md5, .. }) => ("stat", md5),
                ServerItem::Error(e) if e.code == ErrorCode::INTERNAL => ("internal error", None),
                ServerItem::PutOk { .. } => ("put", None),
                ServerItem::StatusStart { .. } => ("status", None),
                ServerItem::Connection(_) => continue,
                ServerItem::DataEnd => continue,
                other => panic!("unexpected {other:?}"),
            });
        }
        seen
    }

    /// A session on a fresh root holding one file nobody has hashed, fed a hello, a GET of that
    /// file from its end (no data to send) and a STAT pipelined behind it.
    fn session_waiting_for_a_hash(content: &[u8]) -> (tempfile::TempDir, Session) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), content).unwrap();
        let server = Server::new(Settings { root: dir.path().to_owned(), ..Settings::default() }).unwrap();
        let now = Instant::now();
        let mut session = Session::new(server, "127.0.0.1:9".parse().unwrap(), now);
        let mut input = Vec::new();
        ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut input);
        let name = Name::parse("f.bin").unwrap();
        Request::Get { name: name.clone(), offset: content.len() as u64 }.encode(&mut input);
        Request::Stat(name).encode(&mut input);
        session.feed(&input, now);
        (dir, session)
    }

    /// `[SEC-3]`: a GET of a file not hashed yet is not answered by hashing inline: the session
    /// hands out the hash as a job and stops, with the STAT behind it unread, until the engine
    /// reports the digest; then both are answered, in order.
    #[test]
    fn a_get_waits_for_its_hash_job_and_holds_back_what_follows() {
        let content = b"hash me once";
        let (_dir, mut session) = session_waiting_for_a_hash(content);
        assert_eq!(replies(session.pending_output()), [("hello", None)]);
        assert!(!session.wants_input() && session.take_body().is_none(), "the session waits for the hash");
        let job = session.take_hash_job().expect("a hash job");
        assert!(session.take_hash_job().is_none(), "handed out once");
        assert_eq!(job.size(), content.len() as u64);

        session.hash_done(job.run_blocking(&crate::digests::HashLimiter::new(1)), Instant::now());
        let md5 = Some(Digest::of(content));
        assert_eq!(replies(session.pending_output()), [("hello", None), ("get", md5), ("stat", md5)]);
        assert!(session.wants_input());
        assert!(session.take_hash_job().is_none(), "the digest is cached now");
    }

    /// `[TRL-7]`, `[TRL-2]`: a FETCH of a large file nobody has hashed is answered at once in the
    /// trailing form: the body is handed out without a hash job, its digest — of the bytes
    /// reported sent — follows it, and is kept for the next request (a FETCH then gets the
    /// leading form). A FETCH from an offset never trails (`[TRL-6]`).
    #[test]
    fn a_fetch_of_an_unhashed_file_trails_its_digest_and_teaches_the_cache() {
        let content: Vec<u8> = (0..TRAILING_FORM_MIN + 12_345).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.bin"), &content).unwrap();
        let settings = Settings { root: dir.path().to_owned(), background_hashes: 0, ..Settings::default() };
        let server = Server::new(settings).unwrap();
        let now = Instant::now();
        let mut session = Session::new(server, "127.0.0.1:9".parse().unwrap(), now);
        let name = Name::parse("big.bin").unwrap();
        let mut input = Vec::new();
        ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut input);
        Request::Fetch { name: name.clone(), offset: 0 }.encode(&mut input);
        Request::Stat(name.clone()).encode(&mut input);
        session.feed(&input, now);
        assert!(session.take_hash_job().is_none(), "no hashing before the first byte");
        let mut wire = session.pending_output().to_vec();
        session.consume_output(wire.len(), now);
        let mut body = session.take_body().expect("the body goes out at once");
        assert_eq!((body.offset, body.len), (0, content.len() as u64));
        // The engine sends it in pieces (sendfile); this test reads them as the client gets them.
        while body.len > 0 {
            let n = body.len.min(300_000);
            let mut piece = vec![0u8; n as usize];
            std::os::unix::fs::FileExt::read_exact_at(&body.file, &mut piece, body.offset).unwrap();
            wire.extend_from_slice(&piece);
            body.offset += n;
            body.len -= n;
            session.body_sent(n, now);
        }
        wire.extend_from_slice(session.pending_output());
        let mut decoder = ReplyDecoder::new();
        let (mut at, mut items) = (0, Vec::new());
        while at < wire.len() {
            let Decoded::Item { item, consumed } = decoder.decode(&wire[at..]).expect("valid") else { break };
            at += consumed;
            items.push(match item {
                ServerItem::FetchTrailing { size, .. } => format!("fetch_trailing {size}"),
                ServerItem::Trailer(md5) => format!("trailer {md5}"),
                ServerItem::Stat(e) => format!("stat {:?}", e.md5.map(|d| d.to_string())),
                ServerItem::Data(_) => continue,
                other => format!("{other:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned(),
            });
        }
        let md5 = Digest::of(&content);
        items.dedup();
        assert_eq!(
            items,
            [
                "Hello".to_owned(),
                format!("fetch_trailing {}", content.len()),
                format!("trailer {md5}"),
                "DataEnd".to_owned(),
                format!("stat {:?}", Some(md5.to_string())),
            ]
        );
        // Known now: a FETCH gets the leading form.
        let n = session.pending_output().len();
        session.consume_output(n, now);
        let mut input = Vec::new();
        Request::Fetch { name, offset: 0 }.encode(&mut input);
        session.feed(&input, now);
        let head = ReplyDecoder::in_session().decode(session.pending_output()).expect("valid");
        assert!(
            matches!(head, Decoded::Item { item: ServerItem::GetHead { frame, .. }, .. } if frame.md5 == md5),
            "[TRL-7] the leading form once the digest is known"
        );
    }

    /// A hash that fails answers its GET with `INTERNAL`; the connection goes on.
    #[test]
    fn a_failed_hash_answers_the_get_with_an_error() {
        let (_dir, mut session) = session_waiting_for_a_hash(b"unreadable");
        let _job = session.take_hash_job().expect("a hash job");
        session.hash_done(Err(std::io::Error::other("read error")), Instant::now());
        assert_eq!(replies(session.pending_output()), [("hello", None), ("internal error", None), ("stat", None)]);
        assert!(session.wants_input());
    }

    /// A session driven where it may not block (the async engine's reactor) answers from the
    /// caches what they hold and defers the rest, reading nothing meanwhile; what it defers is
    /// carried out by `run_deferred`, in order with what was pipelined behind it.
    #[test]
    fn a_session_that_may_not_block_defers_what_the_caches_cannot_answer() {
        let content = b"served from the caches";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), content).unwrap();
        let settings = Settings { root: dir.path().to_owned(), background_hashes: 0, ..Settings::default() };
        let server = Server::new(settings).unwrap();
        let now = Instant::now();
        let mut session = Session::new(server, "127.0.0.1:9".parse().unwrap(), now);
        session.defer_store_calls();
        let name = Name::parse("f.bin").unwrap();
        let md5 = Some(Digest::of(content));
        let mut input = Vec::new();
        ClientHello { min_version: 1, max_version: 1, token: None }.encode(&mut input);
        Request::Status.encode(&mut input);
        Request::Get { name: name.clone(), offset: content.len() as u64 }.encode(&mut input);
        Request::Stat(name.clone()).encode(&mut input);
        session.feed(&input, now);
        assert_eq!(replies(session.pending_output()), [("hello", None), ("status", None)], "STATUS needs no store");
        assert!(session.has_deferred() && !session.wants_input(), "a GET of a file never hashed waits for the pool");

        session.run_deferred(now);
        let job = session.take_hash_job().expect("the pool finds the file unhashed");
        session.hash_done(job.run_blocking(&crate::digests::HashLimiter::new(1)), now);
        assert!(!session.has_deferred() && session.wants_input(), "the STAT behind it is answered from memory");
        assert_eq!(replies(session.pending_output())[2..], [("get", md5), ("stat", md5)]);

        // The digest is in memory now: a GET and a STAT of the file are answered at once.
        let mut input = Vec::new();
        Request::Get { name: name.clone(), offset: content.len() as u64 }.encode(&mut input);
        Request::Stat(name).encode(&mut input);
        session.feed(&input, now);
        assert!(!session.has_deferred(), "answered from the caches");
        let seen = replies(session.pending_output());
        assert_eq!(seen[2..], [("get", md5), ("stat", md5), ("get", md5), ("stat", md5)]);

        // A PUT is begun where the store may block; data that arrives later waits for the pool too,
        // where the empty PUT pipelined behind it is carried out as well, with no further input.
        let data = b"12345";
        let head = |name: &str, data: &[u8]| {
            let frame = FrameHead { name: Name::parse(name).unwrap(), size: data.len() as u64, md5: Digest::of(data) };
            let mut out = Vec::new();
            Request::Put(ferry_proto::PutHead::leading(ferry_proto::PutMode::Overwrite, frame)).encode(&mut out);
            out
        };
        session.feed(&head("new.bin", data), now);
        assert!(session.has_deferred());
        session.run_deferred(now);
        assert!(!session.has_deferred() && session.wants_input(), "the upload is begun; its data is awaited");
        let mut input = data.to_vec();
        input.extend(head("empty.bin", b""));
        session.feed(&input, now);
        assert!(session.has_deferred() && !session.wants_input(), "upload data is written on the pool");
        assert!(!dir.path().join("new.bin").exists());
        session.run_deferred(now);
        assert_eq!(std::fs::read(dir.path().join("new.bin")).unwrap(), data);
        assert_eq!(std::fs::read(dir.path().join("empty.bin")).unwrap(), b"");
        let seen = replies(session.pending_output());
        assert_eq!(seen[6..], [("put", None), ("put", None)]);
        assert!(!session.has_deferred() && session.wants_input());

        // An empty PUT alone: nothing more arrives, yet it completes where it was begun.
        session.feed(&head("alone.bin", b""), now);
        session.run_deferred(now);
        assert_eq!(replies(session.pending_output())[8..], [("put", None)]);
        assert!(dir.path().join("alone.bin").exists());
    }
}
