//! [`Client`]: every command, with retries, on one connection kept open between commands.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{Capabilities, ConnRecord, Digest, Entry, ErrorCode, ErrorReply, FrameHead, Name, PutHead, PutMode};
use ferry_proto::{RequestKind, ServerHello};

use ferry_digest_store::FileKey;

use crate::conn::{Connection, FetchReply, GetReply};
use crate::digest_cache::DigestCache;
use crate::error::Error;
use crate::hashing::{hash_file, HashMode, HashSink};
use crate::local::{Identity, Part};
use crate::progress::Progress;
use crate::ratelimit::RateLimit;
use crate::retry::{Budget, RetryPolicy};
use crate::transport::TlsSetup;

/// The port-less default of `--server`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";

/// How to reach the server and how hard to try.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT`.
    pub server: String,
    /// Presented in the hello; `None` asks for the server's anonymous role.
    pub token: Option<String>,
    /// The deadline of each connect, read and write.
    pub timeout: Duration,
    /// Retries for connecting and for transfers cut off.
    pub retry: RetryPolicy,
    /// Where a download's MD5 is computed.
    pub hash_mode: HashMode,
    /// Where an upload in the trailing form computes its MD5 as it sends. `None` (the default):
    /// inline for a server on this machine, whose own hashing of the data wants the other core
    /// (1 GiB to an in-process server on 2 cores: 382 MiB/s inline, 357 MiB/s on a thread,
    /// measured with the `throughput` example's `put`), and on a thread for any other, where
    /// the client's cores are its own.
    pub upload_hash_mode: Option<HashMode>,
    /// Transfers go no faster than this many bytes a second.
    pub rate_limit: Option<u64>,
    /// The file of the digest cache ([`crate::digest_cache`]): uploads and downloads record the
    /// MD5 of the local file there, and an upload of a file unchanged since takes it from there
    /// instead of reading the whole file first. `None` (the default, so that a library user or
    /// a test never writes to the user's own cache unasked): no cache. `ferry` uses
    /// [`crate::digest_cache::default_path`].
    pub digest_cache: Option<PathBuf>,
    /// Retry a first connection that a loopback address refused, like any other failure to
    /// connect. Off by default: on this machine a refusal is immediate and certain (nothing
    /// listens on that port), so the client says so at once ([`Error::NotListening`]) instead of
    /// waiting out its retries. A program that starts its server just before connecting turns
    /// it on. Once the client has been connected, a refusal (a server restarting) is retried
    /// whatever this says.
    pub wait_for_server: bool,
    /// Use the server's `TRAILER` capability (PROTOCOL.md § 6.5) when it announces it: an
    /// upload whose digest is not known yet is hashed as it is sent, the digest following the
    /// data, and a download from byte 0 is a FETCH, which the server may answer the same way.
    /// Each file is then read once on each side instead of twice. On by default; off, the
    /// digest always comes first (for comparisons, or a server whose trailing form misbehaves).
    pub trailer: bool,
    /// Speak TLS to the server (PROTOCOL.md § 18): `server` is then its TLS port. `None`: plain
    /// TCP.
    pub tls: Option<TlsConfig>,
    /// Send `token` over a plain connection to an address that is not loopback (`[TLS-6]`).
    /// Off by default: such a client refuses to connect at all ([`Error::CleartextToken`]).
    pub allow_cleartext_token: bool,
}

/// How to speak TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Whom to trust to vouch for the server's certificate (`[TLS-5]`).
    pub trust: ferry_tls::Trust,
    /// The name to check the certificate against, and to send as SNI; `None`: the host part of
    /// [`Config::server`].
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The setup for a connection to `server` (`HOST:PORT`).
    ///
    /// # Errors
    /// The CA file cannot be used, or the name is neither a DNS name nor an IP address.
    pub fn setup(&self, server: &str) -> Result<TlsSetup, Error> {
        let host = server.rsplit_once(':').map_or(server, |(host, _port)| host);
        let name = self.server_name.as_deref().unwrap_or(host);
        TlsSetup::new(&self.trust, name).map_err(|source| Error::TlsSetup { source })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER.to_owned(),
            token: None,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            hash_mode: HashMode::default(),
            upload_hash_mode: None,
            rate_limit: None,
            digest_cache: None,
            wait_for_server: false,
            trailer: true,
            tls: None,
            allow_cleartext_token: false,
        }
    }
}

/// How the client waits between attempts; replaced in tests.
pub type Sleep = Arc<dyn Fn(Duration) + Send + Sync>;

/// A finished, verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub name: Name,
    /// Where the file now is.
    pub path: PathBuf,
    pub size: u64,
    pub md5: Digest,
    /// The first offset above 0 that a GET asked for, if the download was resumed (from a
    /// `.part` file left earlier, or after a connection was cut off).
    pub resumed_from: Option<u64>,
    /// Times the download started again from byte 0 (the file changed on the server, or a
    /// resumed file did not verify).
    pub restarts: u32,
    /// Nothing was transferred: the local file already had the server's size and MD5.
    pub up_to_date: bool,
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub name: Name,
    pub size: u64,
    pub md5: Digest,
    /// It replaced a file of that name.
    pub replaced: bool,
    /// The digest came from the digest cache: the file was not read before it was sent.
    pub digest_from_cache: bool,
    /// The digest followed the data (PROTOCOL.md § 6.5): the file was hashed as it was sent,
    /// and read once.
    pub trailing: bool,
}

/// What one download attempt ended with.
enum Step {
    /// Data complete and its MD5 matches the frame's.
    Verified(FrameHead),
    /// Start again from byte 0, for this reason.
    Restart(&'static str),
}

/// A download's state that outlives an attempt.
struct DownloadState {
    /// The digest of the bytes in the `.part` file so far; `None` until an attempt needs it.
    sink: Option<HashSink>,
    resumed_from: Option<u64>,
    restarts: u32,
    /// A resumed download that failed to verify is tried once more from byte 0.
    retried_whole: bool,
}

/// A Ferry client: one server, one connection at a time, opened when first needed, reopened
/// when it breaks, and kept between commands (the shell's commands share it).
pub struct Client {
    config: Config,
    conn: Option<Connection>,
    sleep: Sleep,
    /// The digests of local files, opened at the first transfer.
    cache: DigestCache,
    /// A connection was made once: a refusal now is a server going away or restarting, and
    /// worth retrying even on loopback.
    connected_before: bool,
    /// The TLS setup made for the configuration's `tls` and `server`, kept so that every
    /// connection shares one rustls configuration (and its session cache: a reconnection
    /// resumes the TLS session).
    tls: Option<(TlsConfig, String, TlsSetup)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.config).field("connected", &self.conn.is_some()).finish()
    }
}

impl Client {
    /// A client for `config`; nothing is connected yet.
    pub fn new(config: Config) -> Self {
        let cache = DigestCache::new(config.digest_cache.clone());
        Self { config, conn: None, sleep: Arc::new(std::thread::sleep), cache, connected_before: false, tls: None }
    }

    /// Replaces how the client waits between attempts (tests record the delays instead).
    #[must_use]
    pub fn with_sleep(mut self, sleep: Sleep) -> Self {
        self.sleep = sleep;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, to change between operations (the shell's per-command options):
    /// `rate_limit` and `retry` apply from the next operation on; `server`, `token`,
    /// `timeout`, `tls` and `allow_cleartext_token` from the next connection.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The server's hello, once connected.
    pub fn server_hello(&self) -> Option<&ServerHello> {
        self.conn.as_ref().map(Connection::hello)
    }

    /// Whether the open connection is encrypted; `None` if none is open.
    pub fn is_tls(&self) -> Option<bool> {
        self.conn.as_ref().map(Connection::is_tls)
    }

    /// Our address as the server sees it, once connected.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().and_then(Connection::local_addr)
    }

    /// Connects now (with retries), rather than at the first command.
    ///
    /// # Errors
    /// No connection could be made within the retries, or the server refused it.
    pub fn connect(&mut self, progress: &mut dyn Progress) -> Result<ServerHello, Error> {
        self.run(true, progress, |c| Ok(*c.hello()))
    }

    /// Says goodbye (`[BYE-3]`) and closes the connection, if one is open.
    pub fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if c.is_usable() {
                c.bye();
            }
        }
    }

    /// LIST.
    ///
    /// # Errors
    /// As for every command: refused, or the connection failed within the retries.
    pub fn list(&mut self, progress: &mut dyn Progress) -> Result<Vec<Entry>, Error> {
        self.run(true, progress, Connection::list)
    }

    /// STAT.
    ///
    /// # Errors
    /// As for every command.
    pub fn stat(&mut self, name: &Name, progress: &mut dyn Progress) -> Result<Entry, Error> {
        self.run(true, progress, |c| c.stat(name))
    }

    /// STATUS.
    ///
    /// # Errors
    /// As for every command.
    pub fn status(&mut self, progress: &mut dyn Progress) -> Result<Vec<ConnRecord>, Error> {
        self.run(true, progress, Connection::status)
    }

    /// HELP: the server's text, as received (escape it before printing).
    ///
    /// # Errors
    /// As for every command.
    pub fn help(&mut self, progress: &mut dyn Progress) -> Result<String, Error> {
        self.run(true, progress, Connection::help)
    }

    /// DELETE. Not idempotent: repeated only if the server certainly did not get it.
    ///
    /// # Errors
    /// As for every command.
    pub fn delete(&mut self, name: &Name, progress: &mut dyn Progress) -> Result<(), Error> {
        self.run(false, progress, |c| c.delete(name))
    }

    /// SHUTDOWN (needs the admin role); the connection is closed after it.
    ///
    /// # Errors
    /// As for every command; `FORBIDDEN` without an admin token.
    pub fn shutdown(&mut self, progress: &mut dyn Progress) -> Result<(), Error> {
        self.connect(progress)?;
        let conn = self.conn.take().expect("connected");
        conn.shutdown()
    }

    /// Downloads `name` to `dest`, through `dest.part`, resuming what an earlier attempt left
    /// there when it belongs to the same file (see [`crate::local`]). The MD5 of the whole file is
    /// checked before it gets its final name; a file at `dest` is replaced only with `overwrite`.
    ///
    /// # Errors
    /// Refused by the server; the connection failed within the retries (the `.part` file stays,
    /// to be resumed); the data did not match its MD5 (nothing is kept); `dest` exists; a local
    /// file operation failed.
    pub fn download(
        &mut self,
        name: &Name,
        dest: &Path,
        overwrite: bool,
        progress: &mut dyn Progress,
    ) -> Result<Downloaded, Error> {
        if dest.is_dir() {
            return Err(Error::Usage(format!("{} is a directory", dest.display())));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::NoDirectory { dest: dest.to_owned(), dir: dir.to_owned() });
        }
        if !overwrite {
            if let Ok(meta) = std::fs::symlink_metadata(dest) {
                return match self.same_as_remote(name, dest, &meta, progress)? {
                    Some(entry) => Ok(Downloaded {
                        name: name.clone(),
                        path: dest.to_owned(),
                        size: entry.size,
                        md5: entry.md5.expect("compared"),
                        resumed_from: None,
                        restarts: 0,
                        up_to_date: true,
                    }),
                    None => Err(Error::LocalExists { path: dest.to_owned() }),
                };
            }
        }
        let mut part = Part::open(dest, overwrite)?;
        let mut state = DownloadState { sink: None, resumed_from: None, restarts: 0, retried_whole: false };
        let config = self.config.clone();
        let policy = config.retry.clone();
        let mut budget = Budget::new(&policy);
        let outcome = loop {
            let held = part.len();
            let attempt = match self.connection() {
                Ok(conn) => download_once(conn, name, &mut part, &mut state, &config, progress),
                Err(e) => Err(e),
            };
            self.drop_if_unusable();
            match attempt {
                Ok(Step::Verified(frame)) => break Ok(frame),
                Ok(Step::Restart(why)) => {
                    state.restarts += 1;
                    progress.restarting(name, why);
                }
                Err(e) if e.is_transient() => match budget.failed(part.len() > held) {
                    Some(delay) => {
                        progress.retrying(&e, delay, budget.retry_number(), policy.retries);
                        (self.sleep)(delay);
                        if progress.cancelled() {
                            break Err(Error::Cancelled);
                        }
                    }
                    None => break Err(gave_up(e, budget.attempts())),
                },
                Err(e) => break Err(gave_up(e, budget.attempts() + 1)),
            }
        };
        match outcome {
            Ok(frame) => {
                // The digest is the published file's: the key is taken after the rename, which
                // moves the file's ctime.
                if let Some(meta) = part.publish(overwrite)? {
                    self.cache.insert(&FileKey::of(&meta), frame.md5);
                }
                Ok(Downloaded {
                    name: name.clone(),
                    path: dest.to_owned(),
                    size: frame.size,
                    md5: frame.md5,
                    resumed_from: state.resumed_from,
                    restarts: state.restarts,
                    up_to_date: false,
                })
            }
            Err(e) => {
                // Keep what can be resumed; leave nothing that failed verification, and no empty
                // `.part` behind a download that never started.
                if matches!(e, Error::ChecksumMismatch { .. }) || part.is_empty() {
                    part.discard();
                }
                Err(e)
            }
        }
    }

    /// The server's entry for `name` if the local file `path` (whose metadata is `meta`) is
    /// that very file: a regular file of the same size whose MD5 is the one the server gives.
    /// `None` when it differs, or when the server has not computed the file's MD5 yet
    /// (`[LIST-5]`: then there is nothing to compare with, and no reason to wait for it).
    fn same_as_remote(
        &mut self,
        name: &Name,
        path: &Path,
        meta: &std::fs::Metadata,
        progress: &mut dyn Progress,
    ) -> Result<Option<Entry>, Error> {
        if !meta.is_file() {
            return Ok(None);
        }
        let entry = self.stat(name, progress)?;
        match entry.md5 {
            Some(remote) if entry.size == meta.len() => {
                let local = self.local_digest(path, progress)?;
                Ok((local == remote).then_some(entry))
            }
            _ => Ok(None),
        }
    }

    /// The MD5 of the local file `path`: from the digest cache if the file is unchanged since
    /// it was recorded, otherwise computed (telling `progress`) and recorded.
    ///
    /// # Errors
    /// The file cannot be read, changed while it was read, or `progress` asked to stop.
    pub fn local_digest(&mut self, path: &Path, progress: &mut dyn Progress) -> Result<Digest, Error> {
        let local = |what, source| Error::Local { what, path: path.to_owned(), source };
        let file = File::open(path).map_err(|e| local("open", e))?;
        let meta = file.metadata().map_err(|e| local("read", e))?;
        let key = FileKey::of(&meta);
        if let Some(md5) = self.cache.get(&key) {
            return Ok(md5);
        }
        let md5 = hash_local(&file, path, key.size, progress)?;
        if file.metadata().is_ok_and(|m| FileKey::of(&m) == key) {
            self.cache.insert(&key, md5);
        }
        Ok(md5)
    }

    /// Downloads `name` into `out` (standard output, say) as the data arrives, and checks the
    /// MD5 of the whole at the end. Unlike [`Self::download`], nothing can be held back: on a
    /// mismatch the data has already been written, and the error says so. A transfer cut off
    /// resumes from the bytes already written, within the retries, if the server still has the
    /// same file (`[GET-7]`); if it has another, the download fails, since what was written
    /// cannot be taken back.
    ///
    /// # Errors
    /// Refused by the server; the connection failed within the retries; the file changed on
    /// the server in the middle; the data did not match its MD5; `out` could not be written.
    pub fn download_to_writer(
        &mut self,
        name: &Name,
        out: &mut dyn io::Write,
        progress: &mut dyn Progress,
    ) -> Result<Downloaded, Error> {
        const OUT: &str = "standard output";
        let config = self.config.clone();
        let policy = config.retry.clone();
        let mut budget = Budget::new(&policy);
        let mut sink = HashSink::new(config.hash_mode, None, &mut |_, _| true).map_err(|e| Error::Local {
            what: "hash",
            path: OUT.into(),
            source: e,
        })?;
        // The file being sent: its size, and its digest once known (first, or after the data).
        let mut identity: Option<Identity> = None;
        let mut written = 0u64;
        let mut resumed_from = None;
        loop {
            let before = written;
            let attempt = match self.connection() {
                Ok(conn) => stream_once(conn, name, &mut identity, &mut written, &mut sink, out, &config, progress),
                Err(e) => Err(e),
            };
            self.drop_if_unusable();
            match attempt {
                Ok(()) => break,
                Err(e) if e.is_transient() => match budget.failed(written > before) {
                    Some(delay) => {
                        progress.retrying(&e, delay, budget.retry_number(), policy.retries);
                        (self.sleep)(delay);
                        if progress.cancelled() {
                            return Err(Error::Cancelled);
                        }
                        if written > 0 {
                            resumed_from.get_or_insert(written);
                        }
                    }
                    None => return Err(gave_up(e, budget.attempts())),
                },
                Err(e) => return Err(gave_up(e, budget.attempts() + 1)),
            }
        }
        let Some(Identity { size, md5: Some(md5) }) = identity else {
            unreachable!("a finished download had a frame and a digest")
        };
        let digest = sink.finish().map_err(|e| Error::Local { what: "hash", path: OUT.into(), source: e })?;
        if digest != md5 {
            return Err(Error::ChecksumMismatch {
                what: format!("{} (already written to {OUT})", name.escaped()),
                expected: md5,
                actual: Some(digest),
            });
        }
        Ok(Downloaded {
            name: name.clone(),
            path: PathBuf::from("-"),
            size,
            md5,
            resumed_from,
            restarts: 0,
            up_to_date: false,
        })
    }

    /// Uploads the local file `path` as `name`. The frame carries the MD5 before the data, so
    /// it is taken from the digest cache if the file is unchanged since it was last hashed (same
    /// [`FileKey`]), and otherwise computed first, reading the whole file. Then the data is
    /// streamed. An upload cut off is sent again from the start; in create-only mode, only if
    /// the server cannot have stored it.
    ///
    /// # Errors
    /// Refused by the server (`EXISTS` in create-only mode…); the connection failed within the
    /// retries; the server's check of the data failed, or the file changed while being sent;
    /// the file cannot be read.
    pub fn upload(
        &mut self,
        path: &Path,
        name: &Name,
        mode: PutMode,
        progress: &mut dyn Progress,
    ) -> Result<Uploaded, Error> {
        self.upload_file(path, name, mode, true, progress)
    }

    /// [`Self::upload`] for a temporary file (standard input spooled to disk): the digest cache
    /// is neither read nor filled, since the file is about to disappear.
    ///
    /// # Errors
    /// As for [`Self::upload`].
    pub fn upload_temporary(
        &mut self,
        path: &Path,
        name: &Name,
        mode: PutMode,
        progress: &mut dyn Progress,
    ) -> Result<Uploaded, Error> {
        self.upload_file(path, name, mode, false, progress)
    }

    fn upload_file(
        &mut self,
        path: &Path,
        name: &Name,
        mode: PutMode,
        use_cache: bool,
        progress: &mut dyn Progress,
    ) -> Result<Uploaded, Error> {
        let local = |what, source| Error::Local { what, path: path.to_owned(), source };
        let file = File::open(path).map_err(|e| local("open", e))?;
        let before = file.metadata().map_err(|e| local("read", e))?;
        if !before.is_file() {
            return Err(Error::Usage(format!("{} is not a regular file", path.display())));
        }
        // The version of the file the digest describes, recorded in the cache only if the file
        // is still that version at the end.
        let key = FileKey::of(&before);
        let unchanged = |file: &File| file.metadata().is_ok_and(|m| FileKey::of(&m) == key);
        let mut from_cache = if use_cache { self.cache.get(&key) } else { None };
        if let Some(md5) = from_cache {
            tracing::debug!(path = %path.display(), %md5, "upload: MD5 from the digest cache");
        }
        // The digest to send before the data; `None` until known. A file whose digest the cache
        // does not know is hashed first only for a server without `TRAILER`; otherwise it is
        // hashed as it is sent, and the digest follows the data (§ 6.5).
        let mut md5 = from_cache;
        let size = key.size;
        // The upload fails with `LocalChanged` only if the content may have changed: not for a
        // new ctime alone, which a chmod, a hard link or an extended attribute also sets.
        let fingerprint = |m: &std::fs::Metadata| (m.len(), m.modified().ok());
        let before = fingerprint(&before);
        let changed = |file: &File| file.metadata().map(|m| fingerprint(&m)).ok() != Some(before);
        let policy = self.config.retry.clone();
        let mut budget = Budget::new(&policy);
        let rate = self.config.rate_limit;
        let upload_hash_mode = self.config.upload_hash_mode;
        let allow_trailer = self.config.trailer;
        loop {
            let mut all_sent = false;
            let mut trailing = false;
            let attempt = 'attempt: {
                let conn = match self.connection() {
                    Ok(conn) => conn,
                    Err(e) => break 'attempt Err(e),
                };
                let max = conn.hello().max_file_size;
                if size > max {
                    return Err(Error::Refused {
                        op: RequestKind::Put,
                        subject: Some(name.escaped()),
                        reply: ErrorReply::new(
                            ErrorCode::TOO_LARGE,
                            format!("it is {size} bytes; the server accepts at most {max}"),
                        ),
                    });
                }
                // With a digest known already (from the cache), the leading form costs no extra
                // read, and spares this side the hashing that the trailing form's `[TRL-2]`
                // asks for: it is kept.
                trailing = md5.is_none() && allow_trailer && conn.offers(Capabilities::TRAILER);
                if md5.is_none() && !trailing {
                    md5 = Some(hash_local(&file, path, size, progress)?);
                    // Hashing a large file takes a while: the server may have closed the
                    // connection meanwhile, as idle.
                    self.drop_if_unusable();
                }
                let conn = match self.connection() {
                    Ok(conn) => conn,
                    Err(e) => break 'attempt Err(e),
                };
                (&file).rewind().map_err(|e| local("read", e))?;
                let head = match md5 {
                    Some(md5) => {
                        tracing::debug!(path = %path.display(), size, %md5, "upload: sending, digest first");
                        PutHead::leading(mode, FrameHead { name: name.clone(), size, md5 })
                    }
                    None => {
                        tracing::debug!(path = %path.display(), size, "upload: sending, digest after the data");
                        PutHead::trailing(mode, name.clone(), size)
                    }
                };
                let hash_mode = upload_hash_mode.unwrap_or(match conn.peer().ip().to_canonical().is_loopback() {
                    true => HashMode::Inline,
                    false => HashMode::Thread,
                });
                let sink = match trailing {
                    true => Some(HashSink::new(hash_mode, None, &mut |_, _| true).map_err(|e| local("hash", e))?),
                    false => None,
                };
                // Fed by `sent`, finished by `trailer`: both are the connection's to call.
                let sink = RefCell::new(sink);
                progress.transfer_started(name, size, 0);
                let mut limit = rate.map(RateLimit::new);
                let mut total = 0u64;
                let read_err = |e: io::Error| Error::Local { what: "read", path: path.to_owned(), source: e };
                let mut sent = |chunk: &[u8]| {
                    let n = chunk.len() as u64;
                    if let Some(sink) = sink.borrow_mut().as_mut() {
                        sink.update(chunk);
                    }
                    total += n;
                    // In the trailing form, nothing can be stored before the trailer is out.
                    all_sent = total == size && !trailing;
                    progress.transferred(n);
                    if progress.cancelled() {
                        return Err(Error::Cancelled);
                    }
                    if let Some(l) = &mut limit {
                        l.consume(n);
                    }
                    Ok(())
                };
                // `[TRL-2]`: the digest of the bytes just sent. If the file changed while they
                // were read, they may be no version of it at all: no trailer is sent then, and
                // the server keeps nothing (`[TRL-5]`), which the leading form cannot promise.
                let digest_sent = Cell::new(None);
                let mut trailer = || {
                    if changed(&file) {
                        return Err(Error::LocalChanged { path: path.to_owned() });
                    }
                    let sink = sink.borrow_mut().take().expect("a trailer only for the trailing form");
                    let md5 = sink.finish().map_err(|e| local("hash", e))?;
                    digest_sent.set(Some(md5));
                    Ok(md5)
                };
                let r = conn.put(head, &mut &file, &read_err, &mut sent, &mut trailer);
                if size == 0 || digest_sent.get().is_some() {
                    all_sent = true;
                }
                r.map(|replaced| (replaced, md5.or(digest_sent.get())))
            };
            self.drop_if_unusable();
            match attempt {
                Ok((replaced, sent_md5)) => {
                    if changed(&file) {
                        return Err(Error::LocalChanged { path: path.to_owned() });
                    }
                    let md5 = sent_md5.expect("a PUT sends a digest, before the data or after");
                    if use_cache && from_cache.is_none() && unchanged(&file) {
                        self.cache.insert(&key, md5);
                    }
                    let digest_from_cache = from_cache.is_some();
                    return Ok(Uploaded { name: name.clone(), size, md5, replaced, digest_from_cache, trailing });
                }
                Err(e) if e.code() == Some(ErrorCode::CHECKSUM_MISMATCH) && changed(&file) => {
                    return Err(Error::LocalChanged { path: path.to_owned() });
                }
                // The cached digest is not the file's, though the file's key is the one it was
                // recorded under: a file system whose times are too coarse to tell two writes
                // apart, say. Nothing was stored; forget the record and send again, hashing the
                // file (before the data, or as it goes). This happens at most once: the digest
                // is then the file's own.
                Err(e) if e.code() == Some(ErrorCode::CHECKSUM_MISMATCH) && from_cache.is_some() => {
                    tracing::debug!(path = %path.display(), "upload: the server refused the cached MD5; hashing");
                    self.cache.forget(&key);
                    from_cache = None;
                    md5 = None;
                }
                // A create-only upload whose data all went out may have been stored with its
                // reply lost: sending it again would get EXISTS for our own file.
                Err(e)
                    if e.is_transient() && (mode == PutMode::Overwrite || !all_sent || e.request_not_processed()) =>
                {
                    match budget.failed(false) {
                        Some(delay) => {
                            progress.retrying(&e, delay, budget.retry_number(), policy.retries);
                            (self.sleep)(delay);
                            if progress.cancelled() {
                                return Err(Error::Cancelled);
                            }
                        }
                        None => return Err(gave_up(e, budget.attempts())),
                    }
                }
                Err(e) => return Err(gave_up(e, budget.attempts() + 1)),
            }
        }
    }

    /// Runs `f` on a connection, retrying transient failures: always when `idempotent`,
    /// otherwise only when the server cannot have carried the request out.
    fn run<T>(
        &mut self,
        idempotent: bool,
        progress: &mut dyn Progress,
        mut f: impl FnMut(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let policy = self.config.retry.clone();
        let mut budget = Budget::new(&policy);
        loop {
            let mut sent = false;
            let attempt = match self.connection() {
                Ok(conn) => {
                    let before = conn.requests_sent();
                    let r = f(conn);
                    sent = conn.requests_sent() > before;
                    r
                }
                Err(e) => Err(e),
            };
            self.drop_if_unusable();
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && (idempotent || !sent || e.request_not_processed()) => {
                    match budget.failed(false) {
                        Some(delay) => {
                            progress.retrying(&e, delay, budget.retry_number(), policy.retries);
                            (self.sleep)(delay);
                            if progress.cancelled() {
                                return Err(Error::Cancelled);
                            }
                        }
                        None => return Err(gave_up(e, budget.attempts())),
                    }
                }
                Err(e) => return Err(gave_up(e, budget.attempts() + 1)),
            }
        }
    }

    /// The open connection, or a new one (one attempt).
    fn connection(&mut self) -> Result<&mut Connection, Error> {
        self.drop_if_unusable();
        if self.conn.is_none() {
            let tls = self.tls_setup()?;
            let config = &self.config;
            let c = match Connection::open(
                &config.server,
                config.token.as_deref(),
                config.timeout,
                tls.as_ref(),
                config.allow_cleartext_token,
            ) {
                Ok(c) => c,
                Err(Error::Connect { addr, source, loopback: true })
                    if source.kind() == io::ErrorKind::ConnectionRefused
                        && !self.connected_before
                        && !self.config.wait_for_server =>
                {
                    return Err(Error::NotListening { addr });
                }
                Err(e) => return Err(e),
            };
            self.connected_before = true;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// The TLS setup for the configuration as it is now, made again only if it changed.
    fn tls_setup(&mut self) -> Result<Option<TlsSetup>, Error> {
        let Some(wanted) = &self.config.tls else { return Ok(None) };
        let server = &self.config.server;
        match &self.tls {
            Some((made_for, made_server, setup)) if made_for == wanted && made_server == server => {
                Ok(Some(setup.clone()))
            }
            _ => {
                let setup = wanted.setup(server)?;
                self.tls = Some((wanted.clone(), server.clone(), setup.clone()));
                Ok(Some(setup))
            }
        }
    }

    /// Forgets a connection that broke, was left in the middle of a reply, or was closed by the
    /// server while idle.
    fn drop_if_unusable(&mut self) {
        let usable = self.conn.as_mut().is_some_and(Connection::is_usable);
        if !usable {
            self.conn = None;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// Computes the MD5 of the local file `path`, open as `file`, telling `progress`; `size` is the
/// size its metadata gave, which the bytes read must match.
///
/// # Errors
/// The file cannot be read, it got shorter or longer while being read ([`Error::LocalChanged`]),
/// or `progress` asked to stop.
fn hash_local(mut file: &File, path: &Path, size: u64, progress: &mut dyn Progress) -> Result<Digest, Error> {
    file.rewind().map_err(|e| Error::Local { what: "read", path: path.to_owned(), source: e })?;
    let (md5, read) = hash_file(file, &mut |done, total| {
        progress.hashing(path, done, total);
        !progress.cancelled()
    })
    .map_err(|e| match e.kind() {
        io::ErrorKind::Interrupted => Error::Cancelled,
        _ => Error::Local { what: "read", path: path.to_owned(), source: e },
    })?;
    if read != size {
        return Err(Error::LocalChanged { path: path.to_owned() });
    }
    Ok(md5)
}

/// The error to report after `attempts` attempts.
fn gave_up(e: Error, attempts: u32) -> Error {
    if attempts > 1 {
        Error::Retried { attempts, source: Box::new(e) }
    } else {
        e
    }
}

/// One attempt at a download, on `conn`.
///
/// From byte 0, and if the server announces `TRAILER`, the request is a FETCH: a server that
/// has not hashed the file then sends it at once, hashing as it goes, and its digest after the
/// data (§ 7.10); the data is hashed here as it arrives, and `[TRL-10]` the `.part` file gets
/// its final name only once that digest has come and matches. Resuming is a GET, whose reply
/// always has the digest first: `[GET-7]` is checked before more data is taken.
fn download_once(
    conn: &mut Connection,
    name: &Name,
    part: &mut Part,
    state: &mut DownloadState,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<Step, Error> {
    let resumable = conn.hello().capabilities.contains(Capabilities::RESUME);
    let offset = if resumable { part.resume_offset() } else { 0 };
    let fetch = offset == 0 && config.trailer && conn.offers(Capabilities::TRAILER);
    let reply = match fetch {
        true => conn.fetch(name, offset, progress),
        false => conn.get(name, offset, progress).map(FetchReply::Leading),
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) if offset > 0 && e.code() == Some(ErrorCode::BAD_OFFSET) => {
            part.reset()?;
            state.sink = None;
            return Ok(Step::Restart("the server's file is shorter than the part kept"));
        }
        Err(e) => return Err(e),
    };
    // The whole file's size, and its digest if it came first.
    let (size, leading) = match &reply {
        FetchReply::Leading(r) => (r.frame.size, Some(r.frame.md5)),
        FetchReply::Trailing { size, .. } => {
            tracing::debug!(%name, size, "download: the digest follows the data");
            (*size, None)
        }
    };
    if let FetchReply::Leading(GetReply { frame, .. }) = &reply {
        if offset > 0 && !part.matches(frame) {
            // `[GET-7]`: the bytes kept belong to another version of the file. The data that
            // follows is of no use: the connection is dropped and the download starts again.
            part.reset()?;
            state.sink = None;
            return Ok(Step::Restart("the file changed on the server since the download began"));
        }
    }
    if offset == 0 {
        part.begin(name, Identity { size, md5: leading })?;
        state.sink = None;
    } else {
        if let FetchReply::Leading(GetReply { frame, .. }) = &reply {
            part.learn(frame)?;
        }
        state.resumed_from.get_or_insert(offset);
    }
    if state.sink.is_none() {
        let prefix = if offset > 0 { Some((part.reader()?, offset)) } else { None };
        let path = part.path.clone();
        let sink = HashSink::new(config.hash_mode, prefix, &mut |done, total| {
            progress.hashing(&path, done, total);
            !progress.cancelled()
        })
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => Error::Cancelled,
            _ => Error::Local { what: "read", path: path.clone(), source: e },
        })?;
        state.sink = Some(sink);
    }
    let sink = state.sink.as_mut().expect("just made");
    progress.transfer_started(name, size, offset);
    let mut limit = config.rate_limit.map(RateLimit::new);
    let trailer = conn.recv_data(|chunk| {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        part.append(chunk)?;
        sink.update(chunk);
        progress.transferred(chunk.len() as u64);
        if let Some(l) = &mut limit {
            l.consume(chunk.len() as u64);
        }
        Ok(())
    })?;
    // The machine gives a trailer to a trailing reply, and to no other.
    let Some(expected) = leading.or(trailer) else {
        return Err(Error::ConnectionLost {
            addr: conn.addr().to_owned(),
            during: "downloading",
            detail: "the reply ended without its digest".into(),
        });
    };
    let sink = state.sink.take().expect("just used");
    let digest = sink.finish().map_err(|e| Error::Local { what: "hash", path: part.path.clone(), source: e })?;
    if digest == expected {
        return Ok(Step::Verified(FrameHead { name: name.clone(), size, md5: expected }));
    }
    if state.resumed_from.is_some() && !state.retried_whole {
        // The bytes kept from before may be the damaged ones: fetch the whole file once more.
        state.retried_whole = true;
        part.reset()?;
        return Ok(Step::Restart("the resumed download did not match its MD5"));
    }
    Err(Error::ChecksumMismatch { what: name.escaped(), expected, actual: Some(digest) })
}

/// One attempt at a download into a writer, on `conn`, from the `written` bytes already out.
/// From byte 0, a FETCH if the server announces `TRAILER` (see [`download_once`]); the digest
/// of a trailing reply is recorded in `identity` once it has come.
#[allow(clippy::too_many_arguments)]
fn stream_once(
    conn: &mut Connection,
    name: &Name,
    identity: &mut Option<Identity>,
    written: &mut u64,
    sink: &mut HashSink,
    out: &mut dyn io::Write,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    let resumable = conn.hello().capabilities.contains(Capabilities::RESUME);
    if *written > 0 && !resumable {
        return Err(Error::StreamBroken(format!(
            "the download of {} to standard output was cut off, and this server cannot resume it",
            name.escaped()
        )));
    }
    let reply = match *written == 0 && config.trailer && conn.offers(Capabilities::TRAILER) {
        true => conn.fetch(name, 0, progress)?,
        false => FetchReply::Leading(conn.get(name, *written, progress)?),
    };
    let now = match &reply {
        FetchReply::Leading(r) => Identity::of(&r.frame),
        FetchReply::Trailing { size, .. } => Identity { size: *size, md5: None },
    };
    match identity {
        // `[GET-7]`: another version of the file; what was written cannot be taken back. (A
        // trailing reply cut off before its digest leaves the size alone to compare.)
        Some(first) if first.size != now.size || first.md5.zip(now.md5).is_some_and(|(a, b)| a != b) => {
            return Err(Error::StreamBroken(format!(
                "{} changed on the server while it was being sent; what was written to standard output is incomplete",
                name.escaped()
            )));
        }
        Some(first) => first.md5 = first.md5.or(now.md5),
        None => *identity = Some(now),
    }
    progress.transfer_started(name, now.size, *written);
    let mut limit = config.rate_limit.map(RateLimit::new);
    let trailer = conn.recv_data(|chunk| {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        out.write_all(chunk).map_err(|e| Error::Local { what: "write", path: "standard output".into(), source: e })?;
        sink.update(chunk);
        *written += chunk.len() as u64;
        progress.transferred(chunk.len() as u64);
        if let Some(l) = &mut limit {
            l.consume(chunk.len() as u64);
        }
        Ok(())
    })?;
    if let (Some(first), Some(md5)) = (identity.as_mut(), trailer) {
        first.md5 = Some(md5);
    }
    out.flush().map_err(|e| Error::Local { what: "write", path: "standard output".into(), source: e })
}
