//! `ferryd`: parses flags, sets up logging and signals, and hands a listener to an engine.
//! Everything else lives in ferry-core and the engine crates.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use ferry_core::digests::persist::PersistMode;
use ferry_core::indexer::{Indexer, IndexerSettings};
use ferry_core::{Server, Settings};
use ferry_proto::Role;
use tracing_subscriber::prelude::*;

/// The Ferry file server: serves the files of one directory over the Ferry protocol
/// (PROTOCOL.md), version 1 and the legacy single-download profile, on one port.
///
/// Uploads become visible only whole and verified; SIGINT, SIGTERM or an admin's SHUTDOWN stop
/// accepting, let transfers in flight finish within --grace, then exit 0.
#[derive(Debug, Parser)]
#[command(name = "ferryd", version, max_term_width = 100)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: SocketAddr,
    /// Directory to serve; created if missing.
    #[arg(long, default_value = "./server_files")]
    root: PathBuf,
    /// I/O engine: `blocking` (a thread per client, the reference) or `async` (tokio, for many
    /// clients at once); which are available depends on the build's cargo features.
    #[arg(long, value_enum, default_value_t = Engine::default())]
    engine: Engine,
    /// Reactor threads of the async engine (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Connections served at once; the next one gets BUSY and is closed. Well above
    /// --max-per-ip, so that one address cannot take every slot.
    #[arg(long, default_value_t = Settings::default().max_clients)]
    max_clients: u32,
    /// Connections served at once from one IP address (for IPv6, one /64 prefix).
    #[arg(long, default_value_t = Settings::default().max_per_ip)]
    max_per_ip: u32,
    /// Seconds a connection may wait between requests (0: no limit).
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds a request head may take to arrive, from its first byte: a slow head is cut off
    /// (like nginx's client_header_timeout). Upload data is not included.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=4_000_000))]
    head_timeout: u64,
    /// Seconds a new connection has to send its hello.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds a transfer may go without moving 64 KiB (or the rest of it): upload data arriving,
    /// or replies and downloads taken by the client. A client that stops reading, or trickles,
    /// is dropped after this; a slow but steady transfer is never cut.
    #[arg(long, alias = "write-timeout", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=4_000_000))]
    progress_timeout: u64,
    /// Reply bytes held for one client before the server stops reading its requests
    /// (backpressure: pipelined requests then wait in the client's socket).
    #[arg(long, value_name = "BYTES", default_value_t = Settings::default().max_output as u64,
          value_parser = clap::value_parser!(u64).range(1024..=64 << 20))]
    max_output: u64,
    /// Largest file accepted in an upload, in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    max_file_size: u64,
    /// Longest file name accepted, in bytes (at most 4096).
    #[arg(long, default_value_t = 255, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_name_len: u32,
    /// File of `ROLE TOKEN` lines (roles: read, write, admin) granting roles to tokens.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Role of clients that present no token.
    #[arg(long, value_enum, default_value_t = Anonymous::Write)]
    anonymous: Anonymous,
    /// Refuse every upload and delete, whatever the role.
    #[arg(long)]
    read_only: bool,
    /// Do not serve the legacy single-download profile.
    #[arg(long)]
    no_legacy: bool,
    /// Seconds transfers in flight may take to finish once a shutdown starts.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Milliseconds a connection ended by the server (a fatal error, BYE) goes on reading and
    /// dropping the client's input before it is closed, so that a TCP reset cannot destroy the
    /// last reply (a lingering close; 0: close at once).
    #[arg(long, value_name = "MS", default_value_t = Settings::default().linger.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    linger: u64,
    /// Connections remembered for STATUS.
    #[arg(long, default_value_t = 100)]
    history: usize,
    /// Files hashed at once for downloads that need a digest not known yet, at most.
    #[arg(long, default_value_t = 2)]
    max_concurrent_hashes: usize,
    /// Files hashed at once in the background, at a lowered priority: at start-up, every file
    /// without a kept digest, then each file that appears or changes in the root (0: none; a
    /// file's first download then waits while it is hashed).
    #[arg(long, value_name = "N", default_value_t = Settings::default().background_hashes)]
    background_hashes: usize,
    /// Where files' MD5 digests are kept across restarts: `auto` (a user.ferry.md5 xattr on each
    /// file where the file system allows, else the index), `xattr`, `index`, or `off`.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = Digests::Auto)]
    digests: Digests,
    /// The digest index file [default: .ferry-digests in the root].
    #[arg(long, value_name = "FILE")]
    digest_index: Option<PathBuf>,
    /// Also write the log to a timestamped file in this directory.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info", env = "FERRYD_LOG")]
    log_level: String,
}

#[cfg(not(any(feature = "blocking", feature = "async")))]
compile_error!("ferryd needs at least one engine: enable the `blocking` or `async` feature");

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Engine {
    /// One thread per client (the reference engine).
    #[cfg(feature = "blocking")]
    Blocking,
    /// Tokio tasks on a few reactor threads.
    #[cfg(feature = "async")]
    Async,
}

impl Default for Engine {
    fn default() -> Self {
        #[cfg(feature = "blocking")]
        return Self::Blocking;
        #[cfg(not(feature = "blocking"))]
        return Self::Async;
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Digests {
    /// An xattr on each file where possible, else the index.
    Auto,
    /// Only xattrs.
    Xattr,
    /// Only the index.
    Index,
    /// Nowhere: every file is hashed again after a restart.
    Off,
}

impl From<Digests> for PersistMode {
    fn from(d: Digests) -> Self {
        match d {
            Digests::Auto => Self::Auto,
            Digests::Xattr => Self::Xattr,
            Digests::Index => Self::Index,
            Digests::Off => Self::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Anonymous {
    None,
    Read,
    Write,
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

impl Cli {
    fn settings(&self) -> Result<Settings> {
        let tokens = match &self.tokens {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                ferry_core::settings::parse_tokens(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Default::default(),
        };
        Ok(Settings {
            root: self.root.clone(),
            max_clients: self.max_clients,
            max_per_ip: self.max_per_ip,
            handshake_timeout: Duration::from_secs(self.handshake_timeout.max(1)),
            idle_timeout: secs(self.idle_timeout),
            head_timeout: Duration::from_secs(self.head_timeout),
            progress_timeout: Duration::from_secs(self.progress_timeout),
            max_output: usize::try_from(self.max_output).context("--max-output")?,
            max_file_size: self.max_file_size,
            max_name_len: self.max_name_len,
            tokens,
            anonymous: match self.anonymous {
                Anonymous::None => None,
                Anonymous::Read => Some(Role::Read),
                Anonymous::Write => Some(Role::Write),
            },
            read_only: self.read_only,
            legacy: !self.no_legacy,
            grace: Duration::from_secs(self.grace),
            linger: Duration::from_millis(self.linger),
            history: self.history,
            max_concurrent_hashes: self.max_concurrent_hashes,
            background_hashes: self.background_hashes,
            digests: self.digests.into(),
            digest_index: self.digest_index.clone(),
        })
    }
}

/// Log lines queued for the writer thread, at most (each is one formatted line, a few hundred
/// bytes). Past it, lines are dropped rather than queued or waited for: a log must never slow or
/// grow the server.
const LOG_QUEUE_LINES: usize = 16_384;

/// A writer on its own thread, so that logging a request costs the serving thread a formatted
/// line and a channel send, not a write(2). The thread writes through a buffer that it flushes
/// whenever the queue is empty: one write for a burst of lines, and none held back when idle.
fn log_writer<W: Write + Send + 'static>(
    out: W,
) -> (tracing_appender::non_blocking::NonBlocking, tracing_appender::non_blocking::WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::BufWriter::new(out))
}

fn init_logging(cli: &Cli) -> Result<Vec<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).context("bad --log-level")?;
    let (writer, stderr_guard) = log_writer(std::io::stderr());
    // Colours only for a terminal: a log redirected to a file or a pipe stays plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let mut guards = vec![stderr_guard];
    let file = match &cli.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let stamp = ferry_core::history::now_ms();
            let appender = tracing_appender::rolling::never(dir, format!("ferryd-{stamp}.log"));
            let (writer, guard) = log_writer(appender);
            guards.push(guard);
            Some(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer))
        }
        None => None,
    };
    tracing_subscriber::registry().with(filter).with(stderr).with(file).init();
    Ok(guards)
}

/// Raises the soft limit on open files to the hard limit: each client costs a descriptor, and the
/// default soft limit (often 1024) would cap a server far below its --max-clients.
#[cfg(unix)]
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        match setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum }) {
            Ok(()) => tracing::debug!(limit = ?lim.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _log_guard = init_logging(&cli)?;
    #[cfg(unix)]
    raise_fd_limit();
    let settings = cli.settings()?;
    if settings.anonymous.is_none() && settings.tokens.is_empty() {
        bail!("--anonymous none without --tokens would refuse every client");
    }
    let root = settings.root.clone();
    let server = Server::new(settings).with_context(|| format!("opening the root {}", root.display()))?;
    let listener = TcpListener::bind(cli.listen).with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;

    let s = server.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("installing signal handlers")?;
    std::thread::Builder::new().name("ferry-signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "signal received");
            s.request_shutdown();
        }
    })?;

    tracing::info!(%addr, root = %root.display(), engine = ?cli.engine, "serving");
    tracing::info!("digests are kept {}", server.store.persist().describe());
    let indexer = match cli.background_hashes {
        0 => None,
        threads => {
            let settings = IndexerSettings { threads, ..IndexerSettings::default() };
            Some(Indexer::start(&server, settings).context("starting background hashing")?)
        }
    };
    // Before anyone can know where to connect: accepted sockets inherit the listener's options.
    match cli.engine {
        #[cfg(feature = "blocking")]
        Engine::Blocking => ferry_blocking::prepare_listener(&listener)?,
        #[cfg(feature = "async")]
        Engine::Async => ferry_async::prepare_listener(&listener)?,
    }
    // The one line on stdout: scripts and tests read the real address from it.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    match cli.engine {
        #[cfg(feature = "blocking")]
        Engine::Blocking => ferry_blocking::serve(server.clone(), listener)?,
        #[cfg(feature = "async")]
        Engine::Async => ferry_async::serve_blocking(server.clone(), listener, cli.workers)?,
    }
    // Stopped (the engine has drained): a hash in progress is abandoned, the index flushed.
    if let Some(indexer) = indexer {
        indexer.stop();
    }
    server.store.flush_digests();
    Ok(())
}
