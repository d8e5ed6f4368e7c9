//! The command line: global options and subcommands (clap), shared by `ferry` and its shell.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

const ABOUT: &str = "The Ferry client: list, download, upload and delete files on a ferryd server";

const LONG_ABOUT: &str = "\
The Ferry client: list, download, upload and delete files on a ferryd server.

Downloads are verified: each is written to NAME.part and renamed to NAME only once the MD5 of the \
whole file matches; a download cut off resumes from its .part file, by itself within the retries or \
when the command is run again. Existing local files are never overwritten without --force, nor \
files on the server without --overwrite.

With no command on a terminal, ferry starts its interactive shell.";

const AFTER_HELP: &str = "\
Exit status:
    0  success
    1  refused, by the server (no such file, exists, forbidden, no room...) or locally (a file
       is in the way and --force was not given, a local file cannot be read or written)
    2  usage error; also a token that would go in clear text to another machine (use --tls, or
       --allow-cleartext-token), and a --ca file that holds no usable certificate
    3  network failure after the retries (refused, timed out, cut off, server busy), or a
       server that broke the protocol; a first connection refused by this machine is not
       retried (nothing listens on that port: start ferryd, and wait for its 'listening on');
       a TLS certificate refused (unknown CA: --ca FILE; expired; not for that name: --sni) or
       a TLS handshake that failed, not retried
    4  checksum mismatch: the data did not match its MD5, and nothing was kept
  130  interrupted (Ctrl-C; twice to stop at once); a download's .part file is kept, and ferry
       prints the command that resumes it

Digest cache: ferry records the MD5 of each file it uploads or downloads in
$XDG_CACHE_HOME/ferry/digests.redb (else ~/.cache/ferry/digests.redb), with the file's device,
inode, size, mtime and ctime, so that uploading the file again unchanged sends its MD5 first
without computing it (with a server that offers no TRAILER, a file not in the cache is read whole
before it is sent). Delete that file to clear the cache.

FERRY_LOG=debug (or another tracing filter) logs what the client does on stderr.

Examples:
  ferry put report.pdf                 upload (fails if the server has report.pdf already)
  ferry list
  ferry get report.pdf -o ~/Downloads/
  ferry get '*.log' -o logs/           every file the server lists that matches
  ferry get data.csv -o - | head       to standard output
  tar c dir | ferry put - --as dir.tar from standard input
  ferry sync photos/ --delete          the server gets what differs; loses what photos/ lacks
  ferry sync --from-server mirror/     the other way
  ferry --server files.lan:9999 shell
  ferry --server files.lan:9443 --ca ca.pem list
                                       over TLS, trusting the CA in ca.pem
  ferry completions bash > ~/.local/share/bash-completion/completions/ferry";

/// `ferry`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    disable_help_subcommand = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options of every command.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The server's address.
    #[arg(long, global = true, env = "FERRY_SERVER", hide_env_values = true, value_name = "HOST:PORT", default_value = ferry_client::DEFAULT_SERVER, value_parser = parse_server)]
    pub server: String,

    /// Token presented to the server, for a role other than its anonymous one.
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Deadline of each connect, read and write, in seconds (also 500ms, 2m, 1m30s); plus a second per
    /// 16 MiB for the start of a download whose MD5 the server must compute first.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Retries for connecting and for transfers cut off, waiting about 1, 2, 4... 32 s (each ±25 %).
    /// A first connection refused by this machine (127.0.0.1, ::1) is not retried: nothing
    /// listens there.
    #[arg(long, global = true, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Limit each transfer to RATE bytes a second: 500K, 10M, 1.5G (1024-based; KiB, MiB also).
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,

    /// Neither use nor fill the digest cache (ferry --help says more): every upload hashes its
    /// file, as it sends it or, to a server without TRAILER, before.
    // FERRY_NO_DIGEST_CACHE counts as set unless it is empty, 0, false, no, n, f or off.
    #[arg(long, global = true, env = "FERRY_NO_DIGEST_CACHE", hide_env_values = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub no_digest_cache: bool,

    /// Put each file's MD5 before its data, even with a server that offers it after (TRAILER): an
    /// upload then reads its file twice, and a download the server has not hashed waits for it.
    /// For comparisons; the default is faster, and as well verified.
    #[arg(long, global = true, env = "FERRY_DIGEST_FIRST", hide_env_values = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub digest_first: bool,

    /// No progress bars and no notes; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Connect over TLS, to the server's TLS port (ferryd --tls-listen). Its certificate is
    /// checked against the Web PKI's roots (or --ca's), for the host of --server (or --sni's name).
    #[arg(long, global = true, env = "FERRY_TLS", hide_env_values = true, value_parser = clap::builder::FalseyValueParser::new(), help_heading = "TLS options")]
    pub tls: bool,

    /// Trust only the CA certificates in FILE (PEM): a private CA, or a self-signed server
    /// certificate. Implies --tls.
    #[arg(
        long,
        global = true,
        env = "FERRY_CA",
        hide_env_values = true,
        value_name = "FILE",
        help_heading = "TLS options"
    )]
    pub ca: Option<PathBuf>,

    /// Check the server's certificate against NAME, and send NAME as SNI, instead of the host of
    /// --server. Implies --tls.
    #[arg(long, global = true, value_name = "NAME", help_heading = "TLS options")]
    pub sni: Option<String>,

    /// Do not check the server's certificate at all: encrypted, but anyone on the network path can
    /// pose as the server and read the token and the files. Implies --tls, and overrides --ca (and
    /// FERRY_CA); warns every time.
    #[arg(long, global = true, help_heading = "TLS options")]
    pub insecure: bool,

    /// Send --token without TLS to a server that is not on this machine (refused otherwise: anyone
    /// on the network path could read it).
    #[arg(long, global = true, help_heading = "TLS options")]
    pub allow_cleartext_token: bool,
}

impl Global {
    /// The TLS the options ask for: `--tls`, or any option that implies it.
    pub fn tls_config(&self) -> Option<ferry_client::TlsConfig> {
        let trust = match (&self.ca, self.insecure) {
            (_, true) => ferry_client::Trust::InsecureSkipVerify,
            (Some(ca), false) => ferry_client::Trust::CaFile(ca.clone()),
            (None, false) if self.tls || self.sni.is_some() => ferry_client::Trust::WebPki,
            (None, false) => return None,
        };
        Some(ferry_client::TlsConfig { trust, server_name: self.sni.clone() })
    }
}

/// What `--insecure` prints every time it is given.
pub const INSECURE_WARNING: &str = "ferry: warning: --insecure: the server's certificate is not checked; anyone on the network path can pose as the server and read the token and the files";

/// One command, on the command line or a shell line.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List the files on the server (a table, or --json).
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Download files; each is verified before it gets its name.
    #[command(visible_alias = "download")]
    Get {
        /// Names of the files on the server, or patterns matched against its list ('*.log':
        /// quote them, so that your own shell leaves them alone).
        #[arg(required = true, value_name = "NAME|PATTERN")]
        names: Vec<String>,
        /// Where to put the file, or the directory to put the files in (default: here). `-` writes
        /// one file to standard output as it arrives; its MD5 is checked at the end, and a
        /// mismatch exits 4 after the data.
        #[arg(short, long, value_name = "PATH|DIR|-")]
        output: Option<PathBuf>,
        /// Overwrite local files that are in the way. (A local file with the server's MD5 is
        /// left as it is, and counts as done: "up to date".)
        #[arg(short, long)]
        force: bool,
    },

    /// Upload files: hashed, sent, and kept by the server only if they verify.
    #[command(visible_alias = "upload")]
    Put {
        /// Local files to upload. `-` reads standard input (with --as NAME): the frame carries
        /// the size before the data, so the input is first copied to a temporary file, then
        /// sent, and the temporary file removed.
        #[arg(required = true, value_name = "PATH|-")]
        paths: Vec<PathBuf>,
        /// Name on the server (one file only; default: the file's own name).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Replace a file of the same name on the server.
        #[arg(long)]
        overwrite: bool,
        /// Fail if the server has a file of that name (the default).
        #[arg(long, conflicts_with = "overwrite")]
        create_only: bool,
    },

    /// Delete files on the server.
    #[command(visible_alias = "delete")]
    Rm {
        /// Names of the files on the server.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },

    /// Show one file's size, modification time and MD5.
    Stat {
        /// Name of the file on the server.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },

    /// Show the server's recent connections (a table, or --json).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Show a command's help (help get), or with no command the server's help text.
    Help {
        /// The command to explain.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },

    /// Stop the server gracefully (needs an admin token).
    Shutdown,

    /// Make the server's files the same as a local directory's (or, with --from-server, the
    /// directory's the same as the server's), sending only the files whose MD5 differs.
    #[command(long_about = SYNC_ABOUT)]
    Sync {
        /// The local directory: its files (not its subdirectories) are compared by name, size
        /// and MD5 with the server's list.
        #[arg(value_name = "LOCAL_DIR")]
        dir: PathBuf,
        /// Download into LOCAL_DIR what differs, instead of uploading.
        #[arg(long)]
        from_server: bool,
        /// Also delete what the other side does not have: files on the server (uploading), or
        /// local files (downloading; never a download's .part or .part.meta file).
        #[arg(long)]
        delete: bool,
        /// Say what would be done, and do nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },

    /// Interactive prompt with these commands, line editing and history; reads commands from
    /// standard input when it is not a terminal.
    Shell,

    /// Print a completion script for bash, zsh, fish, elvish or powershell (see Examples).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },

    /// Print ferry's manual page (roff): ferry man | man -l -
    #[command(hide = true)]
    Man,
}

const SYNC_ABOUT: &str = "Make the server's files the same as a local directory's (or, with --from-server, the directory's the same as the server's), sending only the files whose MD5 differs.

The server's list carries each file's size and MD5, so deciding costs one LIST and no transfer (rsync's --checksum, with no extra round trips); local files are hashed, or their MD5 taken from the digest cache. A file whose MD5 the server has not computed yet (one copied into its storage by hand, say) cannot be compared, and is sent. Only the directory's own files count, not its subdirectories, and only those whose names the server could hold. The last line sums up what was done.";

/// A line typed in the shell.
#[derive(Debug, Parser)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    max_term_width = 100,
    help_template = "{subcommands}"
)]
pub struct ShellLine {
    #[command(flatten)]
    pub options: ShellOptions,

    #[command(subcommand)]
    pub command: ShellCommand,
}

/// The global options a shell line may give, for that command only. The connection's own
/// (`--server`, `--token`, `--timeout`, TLS's) and the digest cache's are set when ferry starts;
/// they are accepted here only to say so.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Options of every command (for this command only)")]
pub struct ShellOptions {
    /// Retries for connecting and for transfers cut off.
    #[arg(long, global = true, value_name = "N")]
    pub retries: Option<u32>,

    /// Limit each transfer to RATE bytes a second (10M, 500K, 1.5MiB).
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,

    /// No progress bars and no notes; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true, value_name = "X", num_args = 0..=1)]
    pub server: Option<Option<String>>,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true, value_name = "X", num_args = 0..=1)]
    pub token: Option<Option<String>>,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true, value_name = "X", num_args = 0..=1)]
    pub timeout: Option<Option<String>>,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true)]
    pub no_digest_cache: bool,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true)]
    pub digest_first: bool,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true)]
    pub tls: bool,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true, value_name = "X", num_args = 0..=1)]
    pub ca: Option<Option<String>>,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true, value_name = "X", num_args = 0..=1)]
    pub sni: Option<Option<String>>,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true)]
    pub insecure: bool,

    /// Set when ferry starts.
    #[arg(long, global = true, hide = true)]
    pub allow_cleartext_token: bool,
}

impl ShellOptions {
    /// The first option given that only `ferry`'s own command line can set.
    pub fn fixed_at_start(&self) -> Option<&'static str> {
        [
            (self.server.is_some(), "--server"),
            (self.token.is_some(), "--token"),
            (self.timeout.is_some(), "--timeout"),
            (self.no_digest_cache, "--no-digest-cache"),
            (self.digest_first, "--digest-first"),
            (self.tls, "--tls"),
            (self.ca.is_some(), "--ca"),
            (self.sni.is_some(), "--sni"),
            (self.insecure, "--insecure"),
            (self.allow_cleartext_token, "--allow-cleartext-token"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
}

/// Checks `--server`: `HOST:PORT` with a port from 1 to 65535. A wrong address is a usage error
/// (exit 2), found before anything is tried, not a network failure after the retries.
pub fn parse_server(s: &str) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT (try 127.0.0.1:9999, files.lan:9999 or [::1]:9999)"));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{s:?} has no host before the port (try 127.0.0.1:{port})"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("{s:?}: an IPv6 address goes in brackets, as in [::1]:9999"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_owned()),
        _ => Err(format!("{port:?} is not a port: a port is a number from 1 to 65535")),
    }
}

/// What a shell line may ask.
#[derive(Debug, Subcommand)]
pub enum ShellCommand {
    #[command(flatten)]
    Command(Command),
    /// Change the local directory (default: your home directory).
    Lcd {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the local directory.
    Lpwd,
    /// Leave the shell.
    #[command(visible_alias = "quit")]
    Exit,
}

/// Parses a duration: seconds (`10`, `2.5`), or with units as humantime reads them (`500ms`,
/// `2m`, `1m 30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Duration::try_from_secs_f64(v).map_err(|e| e.to_string())?,
        Ok(_) => return Err(format!("{s:?} is not a duration (try 10, 2.5, 500ms or 2m)")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration ({e}; try 10, 2.5, 500ms or 2m)"))?,
    };
    if d.is_zero() {
        return Err("the timeout must be above 0".into());
    }
    Ok(d)
}

/// Parses a rate in bytes a second with the parse-size crate: `1048576`, `500K`, `10M`,
/// `1.5GiB`, `10 MB` — K, M, G are 1024-based, as in curl's --limit-rate; a trailing `/s` is
/// allowed.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let v = parse_size::Config::new()
        .with_binary()
        .parse_size(t)
        .map_err(|e| format!("{s:?} is not a rate ({e}; try 500K, 10M or 1G)"))?;
    if v < 1 {
        return Err("the rate must be at least 1 byte a second".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
        ShellLine::command().debug_assert();
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("500K"), Ok(512_000));
        assert_eq!(parse_rate("10M/s"), Ok(10 << 20));
        assert_eq!(parse_rate("1.5GB"), Ok(3 << 29));
        assert_eq!(parse_rate("10MiB"), Ok(10 << 20));
        assert_eq!(parse_rate("10 M"), Ok(10 << 20));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn shell_lines_accept_the_commands_and_exit() {
        let parse = |words: &[&str]| ShellLine::try_parse_from(words).map(|l| l.command);
        assert!(matches!(parse(&["ls"]), Ok(ShellCommand::Command(Command::List { json: false }))));
        assert!(matches!(parse(&["download", "a", "b"]), Ok(ShellCommand::Command(Command::Get { .. }))));
        assert!(matches!(parse(&["quit"]), Ok(ShellCommand::Exit)));
        assert!(parse(&["frobnicate"]).is_err());
        let line = ShellLine::try_parse_from(["get", "a", "--limit-rate", "10M", "-q"]).unwrap();
        assert_eq!(line.options.limit_rate, Some(10 << 20));
        assert!(line.options.quiet && line.options.fixed_at_start().is_none());
        let line = ShellLine::try_parse_from(["ls", "--server", "h:1"]).unwrap();
        assert_eq!(line.options.fixed_at_start(), Some("--server"));
    }

    #[test]
    fn server_addresses_are_checked_before_anything_is_tried() {
        for ok in ["127.0.0.1:9999", "files.lan:1", "[::1]:65535", "localhost:9999"] {
            assert_eq!(parse_server(ok).as_deref(), Ok(ok));
        }
        for bad in ["nonsense", "127.0.0.1:99999", "127.0.0.1:0", ":9999", "::1:9999", "h:port", "h:"] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }
}
