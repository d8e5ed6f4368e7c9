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
    2  usage error
    3  network failure after the retries (refused, timed out, cut off, server busy), or a
       server that broke the protocol
    4  checksum mismatch: the data did not match its MD5, and nothing was kept
  130  interrupted (Ctrl-C); a download's .part file is kept for the next get

Digest cache: ferry records the MD5 of each file it uploads or downloads in
$XDG_CACHE_HOME/ferry/digests.redb (else ~/.cache/ferry/digests.redb), with the file's device,
inode, size, mtime and ctime, so that uploading the file again unchanged sends at once instead of
reading it whole first. Delete that file to clear the cache.

FERRY_LOG=debug (or another tracing filter) logs what the client does on stderr.

Examples:
  ferry put report.pdf                 upload (fails if the server has report.pdf already)
  ferry list
  ferry get report.pdf -o ~/Downloads/
  ferry --server files.lan:9999 shell";

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
    #[arg(long, global = true, env = "FERRY_SERVER", hide_env_values = true, value_name = "HOST:PORT", default_value = ferry_client::DEFAULT_SERVER)]
    pub server: String,

    /// Token presented to the server, for a role other than its anonymous one.
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Deadline of each connect, read and write, in seconds (also 500ms, 2m); plus a second per
    /// 16 MiB for the start of a download whose MD5 the server must compute first.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Retries for connecting and for transfers cut off, waiting 1, 2, 4... 32 s (with jitter).
    #[arg(long, global = true, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Limit each transfer to RATE bytes a second (suffixes K, M, G: 1024-based).
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,

    /// Neither use nor fill the digest cache (ferry --help says more): every upload reads its file
    /// first.
    // FERRY_NO_DIGEST_CACHE counts as set unless it is empty, 0, false, no, n, f or off.
    #[arg(long, global = true, env = "FERRY_NO_DIGEST_CACHE", hide_env_values = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub no_digest_cache: bool,

    /// No progress bars and no notes; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

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
        /// Names of the files on the server.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Where to put the file, or the directory to put the files in (default: here).
        #[arg(short, long, value_name = "PATH|DIR")]
        output: Option<PathBuf>,
        /// Overwrite local files that are in the way.
        #[arg(short, long)]
        force: bool,
    },

    /// Upload files: hashed, sent, and kept by the server only if they verify.
    #[command(visible_alias = "upload")]
    Put {
        /// Local files to upload.
        #[arg(required = true, value_name = "PATH")]
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

    /// Show the server's help text.
    Help,

    /// Stop the server gracefully (needs an admin token).
    Shutdown,

    /// Interactive prompt with these commands, line editing and history; reads commands from
    /// standard input when it is not a terminal.
    Shell,
}

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
    #[command(subcommand)]
    pub command: ShellCommand,
}

/// What a shell line may ask.
#[derive(Debug, Subcommand)]
pub enum ShellCommand {
    #[command(flatten)]
    Command(Command),
    /// Leave the shell.
    #[command(visible_alias = "quit")]
    Exit,
}

/// Parses `10`, `2.5`, `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("{s:?} is not a duration (try 10, 2.5, 500ms or 2m)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err("the timeout must be above 0".into());
    }
    Duration::try_from_secs_f64(v * scale).map_err(|e| e.to_string())
}

/// Parses `1048576`, `500K`, `10M`, `1.5G` (1024-based; a trailing `B` or `/s` is allowed).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (number, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("{s:?} is not a rate (try 500K, 10M or 1G)"))?;
    if !v.is_finite() || v < 1.0 {
        return Err("the rate must be at least 1 byte a second".into());
    }
    Ok((v * scale as f64) as u64)
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
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("500K"), Ok(512_000));
        assert_eq!(parse_rate("10M/s"), Ok(10 << 20));
        assert_eq!(parse_rate("1.5GB"), Ok(3 << 29));
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
    }
}
