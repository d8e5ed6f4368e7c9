//! The command line: every flag, its default and its bounds, and how the flags become
//! [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum, ValueHint};
use ferry_core::digests::persist::PersistMode;
use ferry_core::Settings;
use ferry_proto::Role;

use crate::units::{self, Plain, Size, Span, MAX_DURATION};

/// The Ferry file server: serves the files of one directory over the Ferry protocol
/// (PROTOCOL.md), version 1 and the legacy single-download profile, on one port.
///
/// Uploads become visible only whole and verified; SIGINT, SIGTERM or an admin's SHUTDOWN stop
/// accepting, let transfers in flight finish within --grace, then exit 0.
///
/// Sizes take K, M, G, T (powers of 1024: 64G, 512KiB) or plain bytes; durations take units
/// (500ms, 90s, 5m, 1h30m) or a plain number of seconds (of milliseconds for --linger).
#[derive(Debug, Parser)]
#[command(
    name = "ferryd",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    after_help = "Exit status: 0 once stopped and drained; 1 if it cannot start (root, address, tokens \
                  file); 2 for a bad flag or config file."
)]
pub struct Cli {
    /// Read settings from a TOML file: one key per flag, named like the flag without its dashes
    /// (`max-file-size = "64G"`, `read-only = true`); flags given on the command line (or
    /// FERRYD_LOG) win over it. Relative paths in it are relative to the file's directory.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, default_value = "127.0.0.1:9999", value_hint = ValueHint::Other)]
    pub listen: SocketAddr,
    /// Also serve Ferry over TLS on this address (PROTOCOL.md § 18: TLS 1.3, ALPN ferry/1), for
    /// example 0.0.0.0:9443; needs --tls-cert and --tls-key. Printed as `tls listening on ADDR`.
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key"], value_hint = ValueHint::Other)]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS certificate chain, PEM, the server's own certificate first. Read again on SIGHUP
    /// (connections already open keep the old one); `ferryd gen-cert` makes one.
    #[arg(long, value_name = "FILE", requires = "tls_listen", value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_listen", value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,
    /// Directory to serve; it must be writable unless --read-only. If missing, it is created
    /// only when its parent exists (the default is created with its parents), and ferryd says so.
    #[arg(long, default_value = "./server_files", value_hint = ValueHint::DirPath)]
    pub root: PathBuf,
    /// I/O engine: `blocking` (a thread per client, the reference) or `async` (tokio, for many
    /// clients at once); which are available depends on the build's cargo features.
    #[arg(long, value_enum, default_value_t = Engine::default())]
    pub engine: Engine,
    /// Reactor threads of the async engine (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Connections served at once (at least 1); the next one gets BUSY and is closed. Well above
    /// --max-per-ip, so that one address cannot take every slot.
    #[arg(long, default_value_t = Settings::default().max_clients, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// Connections served at once from one IP address (for IPv6, one /64 prefix; at least 1).
    #[arg(long, default_value_t = Settings::default().max_per_ip, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_ip: u32,
    /// How long a connection may wait between requests (0: no limit).
    #[arg(long, value_name = "DURATION", default_value_t = Span(Duration::from_secs(300)),
          value_parser = units::duration(Plain::Seconds, Duration::ZERO, MAX_DURATION))]
    pub idle_timeout: Span,
    /// How long a request head may take to arrive, from its first byte: a slow head is cut off
    /// (like nginx's client_header_timeout). Upload data is not included.
    #[arg(long, value_name = "DURATION", default_value_t = Span(Settings::default().head_timeout),
          value_parser = units::duration(Plain::Seconds, Duration::from_millis(1), MAX_DURATION))]
    pub head_timeout: Span,
    /// How long a new connection has to send its hello.
    #[arg(long, value_name = "DURATION", default_value_t = Span(Settings::default().handshake_timeout),
          value_parser = units::duration(Plain::Seconds, Duration::from_millis(1), MAX_DURATION))]
    pub handshake_timeout: Span,
    /// How long a transfer may go without moving 64 KiB (or the rest of it): upload data
    /// arriving, or replies and downloads taken by the client. A client that stops reading, or
    /// trickles, is dropped after this; a slow but steady transfer is never cut.
    #[arg(long, alias = "write-timeout", value_name = "DURATION",
          default_value_t = Span(Settings::default().progress_timeout),
          value_parser = units::duration(Plain::Seconds, Duration::from_millis(1), MAX_DURATION))]
    pub progress_timeout: Span,
    /// Reply bytes held for one client before the server stops reading its requests
    /// (backpressure: pipelined requests then wait in the client's socket); 1K to 64M.
    #[arg(long, value_name = "SIZE", default_value_t = Size(Settings::default().max_output as u64),
          value_parser = units::size(1024, 64 << 20))]
    pub max_output: Size,
    /// Largest file accepted in an upload (at least 1 byte).
    #[arg(long, value_name = "SIZE", default_value_t = Size(Settings::default().max_file_size),
          value_parser = units::size(1, u64::MAX))]
    pub max_file_size: Size,
    /// Longest file name accepted, in bytes (1 to 4096).
    #[arg(long, default_value_t = 255, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_name_len: u32,
    /// File of `ROLE TOKEN` lines (roles: read, write, admin) granting roles to tokens.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tokens: Option<PathBuf>,
    /// Role of clients that present no token.
    #[arg(long, value_enum, default_value_t = Anonymous::Write)]
    pub anonymous: Anonymous,
    /// Refuse every upload and delete, whatever the role.
    #[arg(long)]
    pub read_only: bool,
    /// Do not serve the legacy single-download profile.
    #[arg(long)]
    pub no_legacy: bool,
    /// Do not offer the TRAILER capability: every file then travels with its digest in front
    /// (PROTOCOL.md § 6.5), as an old-style server sends it.
    #[arg(long)]
    pub no_trailer: bool,
    /// How long transfers in flight may take to finish once a shutdown starts (0: none; they are
    /// cut at once).
    #[arg(long, value_name = "DURATION", default_value_t = Span(Settings::default().grace),
          value_parser = units::duration(Plain::Seconds, Duration::ZERO, MAX_DURATION))]
    pub grace: Span,
    /// How long a connection ended by the server (a fatal error, BYE) goes on reading and
    /// dropping the client's input before it is closed, so that a TCP reset cannot destroy the
    /// last reply (a lingering close; 0: close at once; a plain number is milliseconds; at most
    /// 60s).
    #[arg(long, value_name = "DURATION", default_value_t = Span(Settings::default().linger),
          value_parser = units::duration(Plain::Millis, Duration::ZERO, MAX_LINGER))]
    pub linger: Span,
    /// Connections remembered for STATUS (at least 1).
    #[arg(long, value_name = "N", default_value_t = Settings::default().history,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize))]
    pub history: usize,
    /// Files hashed at once for downloads that need a digest not known yet, at most (at least 1).
    #[arg(long, value_name = "N", default_value_t = Settings::default().max_concurrent_hashes,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize))]
    pub max_concurrent_hashes: usize,
    /// Files hashed at once in the background, at a lowered priority: at start-up, every file
    /// without a kept digest, then each file that appears or changes in the root (0: none; a
    /// file's first download then waits while it is hashed).
    #[arg(long, value_name = "N", default_value_t = Settings::default().background_hashes)]
    pub background_hashes: usize,
    /// Where files' MD5 digests are kept across restarts: `auto` (a user.ferry.md5 xattr on each
    /// file where the file system allows, else the index), `xattr`, `index`, or `off`.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = Digests::Auto)]
    pub digests: Digests,
    /// The digest index file [default: .ferry-digests in the root].
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub digest_index: Option<PathBuf>,
    /// Also write the log to a timestamped file in this directory.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub log_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace or off, or a filter giving levels per module
    /// (`info,ferry_core=debug`). Colours only when the log goes to a terminal.
    #[arg(long, value_name = "LEVEL", default_value = "info", env = "FERRYD_LOG", hide_env_values = true,
          value_parser = units::log_filter)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `ferryd` does instead of serving, when given a subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a shell completion script to stdout (e.g. `ferryd completions bash >
    /// /etc/bash_completion.d/ferryd`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print ferryd's manual page (roff) to stdout: `ferryd man > ferryd.1; man ./ferryd.1`.
    Man,
    /// Make a private CA and a server certificate it signs, for serving over TLS between your own
    /// machines: writes ca.pem (give it to clients: `ferry --ca ca.pem`), cert.pem and key.pem
    /// (for --tls-cert and --tls-key) into DIR. The CA's key is never written: to issue another
    /// certificate, run this again and hand out the new ca.pem.
    GenCert {
        /// A name clients will use for this server: a DNS name or an IP address (repeat for
        /// several).
        #[arg(long = "host", value_name = "NAME", required = true)]
        hosts: Vec<String>,
        /// The directory to write into (created if missing; existing files are not replaced).
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        out: PathBuf,
        /// How long the server certificate is valid.
        #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

#[cfg(not(any(feature = "blocking", feature = "async")))]
compile_error!("ferryd needs at least one engine: enable the `blocking` or `async` feature");

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Engine {
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
pub enum Digests {
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
pub enum Anonymous {
    None,
    Read,
    Write,
}

/// The longest --linger: a lingering close holds a slot.
const MAX_LINGER: Duration = Duration::from_secs(60);

impl Cli {
    /// The server's settings.
    ///
    /// # Errors
    /// The tokens file cannot be read or is malformed.
    pub fn settings(&self) -> Result<Settings> {
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
            handshake_timeout: self.handshake_timeout.0,
            idle_timeout: Some(self.idle_timeout.0).filter(|d| !d.is_zero()),
            head_timeout: self.head_timeout.0,
            progress_timeout: self.progress_timeout.0,
            max_output: usize::try_from(self.max_output.0).context("--max-output")?,
            max_file_size: self.max_file_size.0,
            max_name_len: self.max_name_len,
            tokens,
            anonymous: match self.anonymous {
                Anonymous::None => None,
                Anonymous::Read => Some(Role::Read),
                Anonymous::Write => Some(Role::Write),
            },
            read_only: self.read_only,
            legacy: !self.no_legacy,
            trailer: !self.no_trailer,
            grace: self.grace.0,
            linger: self.linger.0,
            history: self.history,
            max_concurrent_hashes: self.max_concurrent_hashes,
            background_hashes: self.background_hashes,
            digests: self.digests.into(),
            digest_index: self.digest_index.clone(),
        })
    }
}
